r"""MedMNIST results protocol (docs/results.md): one objective's run on one MedMNIST v2 file.

`--config=configs/protocols/medmnist.py:<objective>,<dataset>`, e.g. `simsiam,breastmnist`,
with `--config.data.root` at the directory of the official 28 px file (<root>/<dataset>.npz).

Pretraining uses the training images only (labels unused, except by the supervised objective),
then the encoder is scored on the official test split by kNN, the linear probe (top-1 and AUC,
its L2 strength chosen on a held-out fifth of the training split) and a full fine-tune on all
training labels, beside raw pixels, the random-init encoder and, given
--config.eval.supervised_encoder, supervised training from scratch at the same budget. The
published MedMNIST v2 baselines beside them are ResNet-18s trained at 28 px for 100 epochs.

Budget, for 2 CPU cores: ResNet-18 (CIFAR stem) at width 16, batch 128, 500 steps (about 115
epochs of BreastMNIST, 60 of RetinaMNIST), AdamW at 1e-3 (what MedMNIST's own baselines use,
Adam at 1e-3) with weight decay 1e-4 and a cosine schedule. The augmentation is the objective's
with the MedMNIST preset's crops (half the image or more).

  python main.py --config=configs/protocols/medmnist.py:supervised,breastmnist \
      --config.data.root=../shared/data/medmnist --workdir=runs/medmnist/breast_supervised
  python main.py --config=configs/protocols/medmnist.py:simsiam,breastmnist \
      --config.data.root=../shared/data/medmnist --workdir=runs/medmnist/breast_simsiam \
      --config.eval.supervised_encoder=runs/medmnist/breast_supervised/encoder
"""

from __future__ import annotations

import importlib

import ml_collections

from configs import common
from configs.protocols import cifar10


def _parse(arg: str | None) -> tuple[str, str]:
  parts = [part.strip() for part in (arg or "").split(",") if part.strip()]
  if (len(parts) != 2 or parts[0] not in cifar10.OBJECTIVES
      or parts[1] not in common.MEDMNIST_DATASETS):
    raise ValueError(f"configs/protocols/medmnist.py needs '<objective>,<dataset>', got {arg!r}; "
                     f"objectives: {list(cifar10.OBJECTIVES)}; datasets: "
                     f"{list(common.MEDMNIST_DATASETS)}.")
  return parts[0], parts[1]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  objective, dataset = _parse(arg)
  config = importlib.import_module(f"configs.{objective}").get_config(dataset)
  config.name = f"medmnist:{objective},{dataset}"
  config.model.update(dict(name="resnet18", stem="cifar", width=16))
  config.batch_size = 128
  config.num_steps = 500
  config.num_epochs = -1
  config.log_every_steps = 25
  config.checkpoint_every_steps = 250
  config.optim.update(dict(name="adamw", base_lr=1e-3, lr_batch_scale=128, weight_decay=1e-4,
                           schedule="cosine", warmup_epochs=0.0))
  config.eval.evaluators = ("knn", "linear", "fine_tune")
  config.eval.baselines = ("random_init", "random_init_data_bn", "pixels")
  config.eval.fine_tune.label_fractions = (1.0,)
  return config
