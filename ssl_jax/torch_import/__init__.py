"""Import of published PyTorch SSL checkpoints (MoCo, SwAV, SimCLR, BYOL, PIRL, torchvision,
MoCo-CXR, ...) into ssl-jax encoder directories that `ssl_jax.load_encoder` reads.

  python main.py --mode=convert --checkpoint=moco_v2_800ep_pretrain.pth.tar --source=mocov2_r50 \
      --workdir=converted/mocov2

Modules: safe_reader (weights-only loading, safetensors without torch), sources (the checkpoint
families), key_mapping (torchvision names <-> Flax variables), convert (the pipeline). torch is
an optional extra and is imported only when a torch file is read.
"""

from __future__ import annotations

from ssl_jax.torch_import.convert import (ConversionReport, convert_checkpoint,
                                          load_checkpoint_variables)
from ssl_jax.torch_import.errors import ConversionError
from ssl_jax.torch_import.sources import SOURCES

__all__ = ["SOURCES", "ConversionError", "ConversionReport", "convert_checkpoint",
           "load_checkpoint_variables"]
