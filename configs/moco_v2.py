r"""MoCo v2 (Chen, Fan, Girshick, He 2020): momentum key encoder, a queue of negatives, MLP head.

Paper defaults: ResNet-50, projector 2048 -> 2048 -> 128, temperature 0.2, queue 65,536, key
encoder EMA 0.999, SGD lr 0.03 x batch/256, momentum 0.9, weight decay 1e-4, cosine schedule,
MoCo v2 augmentation, shuffle-BN for the key encoder. On digits the queue is shortened to 4,096
(the training set has 1,347 images, so a 65k queue would hold 50 copies of every image).

Run:
  python main.py --config=configs/moco_v2.py:digits --workdir=runs/moco_v2_digits
  python main.py --config=configs/moco_v2.py:cifar10 --workdir=runs/moco_v2_cifar10
  python main.py --config=configs/moco_v2.py:digits,tiny --workdir=/tmp/moco_tiny
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, tiny = common.parse_arg(arg)
  config = common.base_config("moco_v2", dataset)
  config.objective_config = ml_collections.ConfigDict(dict(
      proj_hidden_dim=2048,
      proj_dim=128,
      temperature=0.2,
      queue_size=65536,
      symmetric=False,
      bn_mode="shuffle",     # 'global' | 'per_device' | 'shuffle'
      bn_groups=0,           # 0: one BN group per device along the batch
  ))
  config.augment.update(common.AUGMENTATIONS["moco_v2"])
  config.optim.update(dict(name="sgd", base_lr=0.03, weight_decay=1e-4, momentum=0.9))
  config.ema.update(dict(tau_base=0.999, schedule="constant"))
  if dataset == "digits":
    config.objective_config.proj_hidden_dim = 512
    config.objective_config.queue_size = 4096
    config.optim.base_lr = 0.06
    config.ema.tau_base = 0.99
  if tiny:
    config.objective_config.proj_hidden_dim = 64
    config.objective_config.proj_dim = 32
    config.objective_config.queue_size = 1024
  return common.finish(config, tiny)
