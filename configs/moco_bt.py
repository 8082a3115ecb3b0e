r"""MoCo + intermediate-layer Barlow Twins (Kaku, Upadhya, Razavian, NeurIPS 2021), 'moco_bt'.

Loss = InfoNCE + sum over the four stages of
  lambda * s * [sum_i (1 - c_ii)^2 + sum_{i != j} c_ij^2],  c = BN(z_q)^T BN(z_k) / N,
with z = the stage's own projector (in -> 2048 -> 2048 -> 2048: twice Linear without bias + BN +
ReLU, then a Linear without bias, as the official `Projection`) applied to the globally pooled
stage map of the query encoder on view 1 (with gradient) and of the key encoder on view 2 (no
gradient); lambda = 5e-5 multiplies both terms and s = 1/32 (official train_ssl_moco_btwins.py,
`Projection(lambd=5e-5, scale_loss=1/32)`).
The projectors are trained by the optimiser (with weight decay, as the official SGD over all
parameters), never EMA-copied, and not part of the exported encoder.

The base MoCo, its paper defaults and the choices it leaves open (lr scaling, global BN, MoCo v2
augmentation) are those of configs/moco_mse.py: ResNet-50 with zero-init residual BNs, single
Linear head to 128, temperature 0.07, queue 65,536, EMA 0.999, SGD momentum 0.9, wd 1e-4,
constant lr 0.03.

The digits presets follow moco_mse's (queue 1,024, temperature 0.1, EMA 0.99, AdamW, cosine, no
zero-init residual BNs) and
narrow the stage projectors to 256 (64 in tiny), as 2048-wide projectors on 8- to 64-channel
stages would dominate the compute of a few-minute CPU run.

Run:
  python main.py --config=configs/moco_bt.py:imagenet --workdir=runs/moco_bt_imagenet
  python main.py --config=configs/moco_bt.py:cifar10 --workdir=runs/moco_bt_cifar10
  python main.py --config=configs/moco_bt.py:digits --workdir=runs/moco_bt_digits
  python main.py --config=configs/moco_bt.py:digits,tiny --workdir=/tmp/moco_bt_tiny
"""

import ml_collections

from configs import common
from configs.moco_mse import intermediate_moco_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, tiny = common.parse_arg(arg)
  config = intermediate_moco_config("moco_bt", dataset, tiny)
  config.objective_config.update(dict(
      stage_weights=(5e-5, 5e-5, 5e-5, 5e-5),   # lambda of stages 1-4 (on both terms)
      stage_loss_scale=1.0 / 32.0,              # the official scale_loss
      stage_proj_dim=2048,                      # width of every layer of the stage projectors
  ))
  if dataset == "digits":
    config.objective_config.stage_proj_dim = 256
  if tiny:
    config.objective_config.stage_proj_dim = 64
  return common.finish(config, tiny)
