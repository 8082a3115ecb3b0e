r"""Saliency of the pooled features: occlusion (a 10 x 10 occluder of the encoder's mean colour
slides over the image; normalised feature change) and gradient saliency, drawn over the first
`eval.saliency.num_images` test images (saliency_<encoder>.png); reports attentive diffusion, the
percentage of a map's pixels above its mean. The occluder stride is 1 up to 84-px images, then
about side / 56 (`eval.saliency.occluder_stride` overrides it).

Run:
  python main.py --mode=eval --config=configs/eval/saliency.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/saliency
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.eval_config("saliency", arg, baselines=("random_init",))
