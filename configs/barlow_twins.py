r"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of two views' embeddings -> identity.

Paper defaults (section 4 "Implementation details" and the official facebookresearch/barlowtwins
main.py): ResNet-50 with zero-initialised last BN scale in each residual block
(`resnet50(zero_init_residual=True)`), projector 8192-8192-8192 (Linear without bias + BN + ReLU
for the hidden layers, last Linear without bias), loss sum (1 - C_ii)^2 + 0.0051 sum_{i!=j} C_ij^2
with C over the global batch, batch 2048, 1000 epochs, LARS (trust coefficient 1e-3, momentum
0.9) with lr 0.2 x batch/256 for the weights, weight decay 1.5e-6, biases and BN parameters
excluded from weight decay and LARS adaptation, 10 warm-up epochs then cosine decay; BYOL's
augmentation (blur 1.0 / 0.1, solarisation 0.0 / 0.2 on the two views).

The paper's separate learning rate for biases and BN parameters, 0.0048 x batch/256 against the
weights' 0.2 x batch/256, goes through the optimiser's 'bias_and_norm' parameter group (see
ssl_jax/objectives/barlow_twins.py): `objective_config.bias_lr_group=True` puts the 1-D leaves
there and `optim.bias_and_norm_lr_multiplier = 0.0048 / 0.2` sets their rate.

Where paper and code differ, or we depart from them:
- The official cosine ends at 0.001 x the peak; ours ends at 0.
- Weight decay 1.5e-6 follows the paper (the official main.py's default is 1e-6); lambda = 0.0051
  follows main.py (the paper's text rounds it to 5e-3).
- CIFAR-scale presets (image size <= 96) use a 2048-2048-2048 projector (the paper only trains on
  ImageNet); the digits presets use 512-512-512, AdamW and no zero-init residual (see the code).

Run:
  python main.py --config=configs/barlow_twins.py:digits --workdir=runs/barlow_twins_digits
  python main.py --config=configs/barlow_twins.py:cifar10 --workdir=runs/barlow_twins_cifar10
  python main.py --config=configs/barlow_twins.py:imagenet --workdir=runs/barlow_twins_imagenet
  python main.py --config=configs/barlow_twins.py:digits,tiny --workdir=/tmp/barlow_twins_tiny
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, tiny = common.parse_arg(arg)
  config = common.base_config("barlow_twins", dataset)
  config.objective_config = ml_collections.ConfigDict(dict(
      proj_hidden_dim=8192,
      proj_dim=8192,
      proj_layers=3,           # Linear layers in the projector
      lambda_offdiag=0.0051,   # weight of the off-diagonal (redundancy reduction) term
      bias_lr_group=True,      # biases / BN params in the second optimiser group (see above)
  ))
  config.model.zero_init_residual = True
  config.augment.update(common.AUGMENTATIONS["byol"])
  config.optim.update(dict(name="lars", base_lr=0.2, weight_decay=1.5e-6, momentum=0.9,
                           warmup_epochs=10.0, exclude_bias_and_norm=True,
                           bias_and_norm_lr_multiplier=0.0048 / 0.2))
  if dataset == "imagenet":
    config.batch_size = 2048
    config.num_epochs = 1000
  if config.data.image_size <= 96:
    config.objective_config.update(dict(proj_hidden_dim=2048, proj_dim=2048))
  if dataset == "digits":
    # 1,347 images of 16 px and a few hundred steps: AdamW, as the MoCo v2 digits preset (LARS's
    # large-batch recipe has no large batch to serve here), a 512-wide projector (narrower ones
    # learned less in tiny runs), and no zero-initialised residual BN (it lowered the trained kNN
    # of short runs).
    config.objective_config.update(dict(proj_hidden_dim=512, proj_dim=512))
    config.model.zero_init_residual = False
    # Adam normalises each parameter's step, so the paper's lower bias / BN rate (set for LARS,
    # which leaves those parameters unadapted) does not carry over: one rate for all.
    config.objective_config.bias_lr_group = False
    config.optim.update(dict(name="adamw", base_lr=1e-2, weight_decay=1e-4, warmup_epochs=2.0,
                             bias_and_norm_lr_multiplier=1.0))
  config = common.finish(config, tiny)
  if tiny and dataset == "digits":
    # The digits preset as it is, without warm-up: 200 steps leave no time for one.
    config.optim.warmup_epochs = 0.0
  elif tiny:
    config.objective_config.update(dict(proj_hidden_dim=64, proj_dim=64))
    config.optim.warmup_epochs = 0.0
  return config
