r"""MoCo v1 (He, Fan, Wu, Xie, Girshick 2020): momentum key encoder, queue, single-Linear head.

Paper defaults (section 3.3 and 4.1, official main_moco.py without --mlp/--aug-plus/--cos):
ResNet-50, head = one Linear to dim 128 (the fc), temperature 0.07, queue 65,536, key encoder EMA
0.999, SGD lr 0.03 x batch/256, momentum 0.9, weight decay 1e-4, 200 epochs, shuffle-BN, and the
InstDisc augmentation: RandomResizedCrop scale (0.2, 1), RandomGrayscale p=0.2, ColorJitter
(0.4, 0.4, 0.4, 0.4) always applied, horizontal flip, no blur.

Departures, where the engine cannot express the paper exactly:
- Schedule: the paper multiplies the lr by 0.1 at epochs 120 and 160; the engine has cosine and
  constant schedules only, so this config uses cosine (MoCo v2's, the closer of the two).
- Augmentation order: the official pipeline converts to grayscale *before* the colour jitter; the
  on-device pipeline jitters first. On a grey image saturation and hue do nothing and brightness /
  contrast commute with the luma conversion (up to clipping), so the distributions nearly agree.

The digits presets depart where 1,347 tiny images and a few hundred steps demand it (as MoCo v2's,
see configs/moco_v2.py): queue 1,024, temperature 0.1, EMA 0.99, AdamW; and the digits
augmentation (mild crops, no colour) replaces the v1 augmentation there, as for every objective.

Run:
  python main.py --config=configs/moco_v1.py:imagenet --workdir=runs/moco_v1_imagenet
  python main.py --config=configs/moco_v1.py:cifar10 --workdir=runs/moco_v1_cifar10
  python main.py --config=configs/moco_v1.py:digits --workdir=runs/moco_v1_digits
  python main.py --config=configs/moco_v1.py:digits,tiny --workdir=/tmp/moco_v1_tiny
"""

import ml_collections

from configs import common

# MoCo v1's augmentation (the InstDisc one; official main_moco.py without --aug-plus). Local to
# this config: configs/common.py holds the presets shared by several objectives.
MOCO_V1_AUGMENTATION = dict(crop_scale=(0.2, 1.0), flip=True,
                            jitter_prob=1.0, brightness=0.4, contrast=0.4, saturation=0.4,
                            hue=0.4, grayscale_prob=0.2, blur_prob=(0.0, 0.0),
                            solarize_prob=(0.0, 0.0))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, tiny = common.parse_arg(arg)
  config = common.base_config("moco_v1", dataset)
  config.objective_config = ml_collections.ConfigDict(dict(
      proj_dim=128,
      temperature=0.07,
      queue_size=65536,
      symmetric=False,
      symmetric_queues="per_view",   # 'per_view' | 'shared' (only read when symmetric)
      bn_mode="shuffle",             # 'global' | 'per_device' | 'shuffle'
      bn_groups=0,                   # 0: one BN group per device along the batch
  ))
  config.augment.update(MOCO_V1_AUGMENTATION)
  config.optim.update(dict(name="sgd", base_lr=0.03, weight_decay=1e-4, momentum=0.9,
                           schedule="cosine"))
  config.ema.update(dict(tau_base=0.999, schedule="constant"))
  if dataset == "digits":
    # As MoCo v2's digits preset: with SGD the projections collapsed; AdamW spreads them.
    config.objective_config.update(dict(queue_size=1024, temperature=0.1))
    config.optim.update(dict(name="adamw", base_lr=1e-3, weight_decay=1e-4))
    config.ema.tau_base = 0.99
  if tiny:
    config.objective_config.update(dict(proj_dim=64, queue_size=512))
    if dataset == "digits":
      config.optim.base_lr = 3e-3
  return common.finish(config, tiny)
