r"""MoCo + intermediate-layer MSE (Kaku, Upadhya, Razavian, NeurIPS 2021), objective 'moco_mse'.

Loss = InfoNCE + sum_i lambda_i * MSE(pool_i(query stage i), pool_i(key stage i)), query stages
from view 1 (with gradient), key stages from the key encoder on view 2 (no gradient); pooled to
16x16 (stages 1-2) and 4x4 (stages 3-4), lambda_i = 0.25 (official train_ssl_moco_mse.py).

Paper defaults (the paper's base MoCo, official code = pl_bolts' MoCo with use_mlp=False):
ResNet-50 with zero-initialised last BN of each residual block, single-Linear head to 128 (no
MLP), temperature 0.07, queue 65,536, key-encoder EMA 0.999, SGD momentum 0.9, weight decay 1e-4,
constant lr 0.03 (no schedule). Choices the paper leaves open, and which default each follows:
- lr and batch: the official runs used lr 0.03 unscaled at batch 16-32 (one GPU); here base_lr
  0.03 is MoCo's rate for a batch of 256, which the cifar10/imagenet presets use, so they run at
  exactly 0.03. Set --config.optim.lr_batch_scale=<batch> to keep 0.03 at another batch.
- BatchNorm: bn_mode 'global', as the official single-GPU runs (their shuffle-BN path only runs
  under DDP); 'shuffle' and 'per_device' are available (stage maps are then un-shuffled too).
- Augmentation: the MoCo v2 preset (the paper's "Moco2" transforms are dataset-specific ones
  for X-ray / histopathology images, of the MoCo v2 kind).

The digits presets depart where 1,347 tiny images and a few hundred steps demand it, as MoCo v2's
(configs/moco_v2.py): queue 1,024, temperature 0.1, EMA 0.99, AdamW, cosine schedule; and no
zero-initialised residual BNs, which slow short runs down. On 16 px digits the stages are 16, 8,
4 and 2 px wide: stages 1 and 3 already have their target size, and stages 2 and 4, smaller than
theirs, have their pixels repeated by the adaptive pooling (torch's semantics), so every stage's
MSE there equals the unpooled one.

Run:
  python main.py --config=configs/moco_mse.py:imagenet --workdir=runs/moco_mse_imagenet
  python main.py --config=configs/moco_mse.py:cifar10 --workdir=runs/moco_mse_cifar10
  python main.py --config=configs/moco_mse.py:digits --workdir=runs/moco_mse_digits
  python main.py --config=configs/moco_mse.py:digits,tiny --workdir=/tmp/moco_mse_tiny
"""

import ml_collections

from configs import common


def intermediate_moco_config(objective: str, dataset: str,
                             tiny: bool) -> ml_collections.ConfigDict:
  """The paper's base MoCo shared by 'moco_mse' and 'moco_bt' (see the module docstring); the
  caller adds its stage-loss fields to `config.objective_config` and calls `common.finish`."""
  config = common.base_config(objective, dataset)
  config.objective_config = ml_collections.ConfigDict(dict(
      proj_dim=128,
      temperature=0.07,
      queue_size=65536,
      symmetric=False,       # the paper's asymmetric MoCo (must stay False)
      bn_mode="global",      # 'global' | 'per_device' | 'shuffle'
      bn_groups=0,           # 0: one BN group per device along the batch
  ))
  config.model.zero_init_residual = True   # the official resnet50(zero_init_residual=True)
  config.augment.update(common.AUGMENTATIONS["moco_v2"])
  config.optim.update(dict(name="sgd", base_lr=0.03, weight_decay=1e-4, momentum=0.9,
                           schedule="constant"))
  config.ema.update(dict(tau_base=0.999, schedule="constant"))
  if dataset == "digits":
    # As MoCo v2's digits preset: with SGD the projections collapsed; AdamW spreads them.
    config.objective_config.update(dict(queue_size=1024, temperature=0.1))
    config.optim.update(dict(name="adamw", base_lr=1e-3, weight_decay=1e-4, schedule="cosine"))
    config.ema.tau_base = 0.99
    # Zero-initialised residual BNs slow the start of a short run (and weaken the random-init
    # baseline the run is compared with).
    config.model.zero_init_residual = False
  if tiny:
    config.objective_config.update(dict(proj_dim=64, queue_size=512))
    if dataset == "digits":
      config.optim.base_lr = 3e-3
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, tiny = common.parse_arg(arg)
  config = intermediate_moco_config("moco_mse", dataset, tiny)
  config.objective_config.update(dict(
      stage_weights=(0.25, 0.25, 0.25, 0.25),   # lambda_i of stages 1-4
      stage_pool_sizes=(16, 16, 4, 4),          # adaptive average pooling target per stage
  ))
  return common.finish(config, tiny)
