r"""Linear probe on frozen pooled features (Kornblith et al. 2019 protocol).

Multinomial logistic regression with L2 on standardised features; the strength is chosen on a
validation split (20 % of the training split) from 45 log-spaced values, then the probe is refit
on train + validation and scored on the test split: top-1, mean per-class accuracy, quadratic
kappa (and binary AUC for two-class data).

Run:
  python main.py --mode=eval --config=configs/eval/linear.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/linear
  python main.py --mode=eval --config=configs/eval/linear.py:cifar10 \
      --config.encoder=runs/moco_v2_cifar10/encoder --workdir=runs/moco_v2_cifar10/eval/linear
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.eval_config("linear", arg)
