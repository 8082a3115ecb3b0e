r"""VICReg (Bardes, Ponce & LeCun 2022): invariance, variance and covariance terms on two views.

Paper defaults (section 4.1 and appendix C, and the official facebookresearch/vicreg
main_vicreg.py): ResNet-50 with zero-initialised last BN scale in each residual block
(`resnet50(zero_init_residual=True)`), expander 8192-8192-8192 (Linear + BN + ReLU for the hidden
layers, last Linear without bias), loss 25 x invariance + 25 x variance + 1 x covariance with the
variance and covariance over the global batch, batch 2048, 1000 epochs, LARS (trust coefficient
1e-3, momentum 0.9) with lr 0.2 x batch/256, weight decay 1e-6, biases and BN parameters excluded
from weight decay and LARS adaptation (one learning rate for all parameters), 10 warm-up epochs
then cosine decay; BYOL's augmentation (blur 1.0 / 0.1, solarisation 0.0 / 0.2 on the two views).

Where paper and code differ, or we depart from them:
- The official cosine ends at 0.001 x the peak; ours ends at 0.
- The official README has two recipes: 1000 epochs at batch 2048 with base lr 0.2 (the paper's,
  which the presets follow) and 100 epochs at batch 512 with base lr 0.3.
- CIFAR-scale presets (image size <= 96) use a 2048-2048-2048 expander (the paper only trains on
  ImageNet); the digits presets use 512-512-512, AdamW and no zero-init residual, as Barlow
  Twins' (see the code).

Run:
  python main.py --config=configs/vicreg.py:digits --workdir=runs/vicreg_digits
  python main.py --config=configs/vicreg.py:cifar10 --workdir=runs/vicreg_cifar10
  python main.py --config=configs/vicreg.py:imagenet --workdir=runs/vicreg_imagenet
  python main.py --config=configs/vicreg.py:digits,tiny --workdir=/tmp/vicreg_tiny
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, tiny = common.parse_arg(arg)
  config = common.base_config("vicreg", dataset)
  config.objective_config = ml_collections.ConfigDict(dict(
      proj_hidden_dim=8192,     # the expander's hidden width
      proj_dim=8192,            # the embedding the loss sees
      proj_layers=3,            # Linear layers in the expander
      invariance_weight=25.0,   # lambda: mean squared distance between the two views' embeddings
      variance_weight=25.0,     # mu: hinge on each dimension's std (averaged over the branches)
      covariance_weight=1.0,    # nu: squared off-diagonal covariances / d (summed over branches)
  ))
  config.model.zero_init_residual = True
  config.augment.update(common.AUGMENTATIONS["byol"])
  config.optim.update(dict(name="lars", base_lr=0.2, weight_decay=1e-6, momentum=0.9,
                           warmup_epochs=10.0, exclude_bias_and_norm=True))
  if dataset == "imagenet":
    config.batch_size = 2048
    config.num_epochs = 1000
  if config.data.image_size <= 96:
    config.objective_config.update(dict(proj_hidden_dim=2048, proj_dim=2048))
  if dataset == "digits":
    # 1,347 images of 16 px and a few hundred steps: AdamW, as the Barlow Twins and MoCo v2
    # digits presets (LARS's large-batch recipe has no large batch to serve here), a 512-wide
    # expander and no zero-initialised residual BN.
    config.objective_config.update(dict(proj_hidden_dim=512, proj_dim=512))
    config.model.zero_init_residual = False
    config.optim.update(dict(name="adamw", base_lr=1e-2, weight_decay=1e-4, warmup_epochs=2.0))
  config = common.finish(config, tiny)
  if tiny and dataset == "digits":
    config.optim.warmup_epochs = 0.0
  elif tiny:
    config.objective_config.update(dict(proj_hidden_dim=64, proj_dim=64))
    config.optim.warmup_epochs = 0.0
  return config
