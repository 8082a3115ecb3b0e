r"""BYOL (Grill et al. 2020): online network with a predictor regresses an EMA target's projection.

Paper defaults: ResNet-50, projector and predictor 4096 -> 256 (BN + ReLU in the hidden layer),
symmetric loss 2 - 2cos, target EMA tau from 0.996 to 1 by tau = 1 - (1 - tau_base)(cos(pi k/K)+1)/2,
LARS with lr 0.2 x batch/256 (the paper's 4096-batch lr is 4.8 = 0.3 x 4096/256; 0.2 is the
value of the official 300-epoch CIFAR-style runs we follow), weight decay 1.5e-6, biases and BN
excluded from weight decay and LARS adaptation, 10 warm-up epochs, cosine decay; BYOL augmentation
(asymmetric blur 1.0/0.1 and solarisation 0.0/0.2). The target keeps its own BN statistics.

Options from the study of non-contrastive dynamics (Tian et al. 2021; defaults keep BYOL):
  objective_config.predictor='linear'    one-layer d x d predictor without bias
  objective_config.symmetric_predictor=True   W <- (W + W^T)/2 after each update (linear only)
  ema.enabled=False                      tau = 0: the target is the online network of the step
  optim.predictor_lr_multiplier / optim.predictor_weight_decay / optim.predictor_schedule
                                         the predictor's own lr and weight decay
  analysis_every_steps=N                 eigenspace tracking of W vs F (linear predictor only);
                                         plot with `python main.py --mode=plot --workdir=W`

Run:
  python main.py --config=configs/byol.py:digits --workdir=runs/byol_digits
  python main.py --config=configs/byol.py:imagenet --workdir=runs/byol_imagenet
  python main.py --config=configs/byol.py:digits,tiny --workdir=/tmp/byol_tiny
  python main.py --config=configs/byol.py:digits,tiny \
    --config.objective_config.predictor=linear --config.analysis_every_steps=20 \
    --workdir=/tmp/byol_linear && python main.py --mode=plot --workdir=/tmp/byol_linear
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, tiny = common.parse_arg(arg)
  config = common.base_config("byol", dataset)
  config.objective_config = ml_collections.ConfigDict(dict(
      proj_hidden_dim=4096,
      proj_dim=256,
      pred_hidden_dim=4096,
      predictor="mlp",              # 'mlp' | 'linear'
      symmetric_predictor=False,
      correlation_rho=0.3,          # EMA rate of F, kept with the linear predictor
  ))
  config.augment.update(common.AUGMENTATIONS["byol"])
  config.optim.update(dict(name="lars", base_lr=0.2, weight_decay=1.5e-6, momentum=0.9,
                           warmup_epochs=10.0, exclude_bias_and_norm=True))
  config.ema.update(dict(tau_base=0.996, schedule="cosine"))
  if dataset == "digits":
    config.objective_config.update(dict(proj_hidden_dim=1024, proj_dim=128, pred_hidden_dim=1024))
    config.optim.update(dict(base_lr=1.0, warmup_epochs=5.0))
    config.ema.tau_base = 0.99
  config = common.finish(config, tiny)
  if tiny and dataset == "digits":
    # AdamW, a constant EMA of 0.97 and small heads let the tiny job learn in a few hundred
    # steps (LARS's recipe is for large batches). 300 steps, not the shared 200, leave its kNN a
    # margin over the random init with BN statistics from the data, which the tests require.
    config.num_steps = 300
    config.objective_config.update(dict(proj_hidden_dim=256, proj_dim=64, pred_hidden_dim=256))
    config.optim.update(dict(name="adamw", base_lr=1e-2, weight_decay=1e-4, warmup_epochs=0.0))
    config.ema.update(dict(tau_base=0.97, schedule="constant"))
  elif tiny:
    config.objective_config.update(dict(proj_hidden_dim=64, proj_dim=32, pred_hidden_dim=64))
    config.optim.warmup_epochs = 0.0
  return config
