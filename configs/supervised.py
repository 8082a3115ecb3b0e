r"""Supervised training from scratch: the same backbone with a linear classifier, cross-entropy
on the labels; the baseline of every results table (docs/results.md).

It uses the dataset preset's image size, model, batch and augmentation exactly as an SSL config
of the same preset does (the shared defaults: MoCo v2's augmentation, both views of each image as
training examples), so that at the same `num_epochs` / `num_steps` it sees what the SSL run sees.
Optimiser: SGD with momentum 0.9, learning rate 0.1 x batch/256, weight decay 5e-4, cosine
schedule (the usual from-scratch recipe for CIFAR-sized ResNets); the digits presets use AdamW,
as the SSL digits presets do. Multi-label data is trained with a sigmoid cross-entropy per label.

Run:
  python main.py --config=configs/supervised.py:digits --workdir=runs/supervised_digits
  python main.py --config=configs/supervised.py:cifar10_folder --config.data.root=/data/cifar10 \
      --workdir=runs/supervised_cifar10
  python main.py --config=configs/supervised.py:digits,tiny --workdir=/tmp/supervised_tiny
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, tiny = common.parse_arg(arg)
  config = common.base_config("supervised", dataset)
  config.objective_config = ml_collections.ConfigDict()
  config.optim.update(dict(name="sgd", base_lr=0.1, weight_decay=5e-4, momentum=0.9))
  if dataset == "digits":
    config.optim.update(dict(name="adamw", base_lr=1e-3, weight_decay=1e-4))
  return common.finish(config, tiny)
