r"""DirectPred (Tian, Chen & Ganguli, ICML 2021): BYOL whose linear predictor is set from the
correlation F of its inputs instead of trained (ssl_jax/objectives/directpred.py).

Paper defaults (the official STL-10 / CIFAR-10 recipe, luckmatters ssl/real-dataset, whose
README runs DirectPred with `predictor_reg=corr predictor_freq=1 dyn_lambda=0.3 dyn_eps=0.01
balance_type=boost_scale`): ResNet-18, projector 512 -> 128 (BN + ReLU in the hidden layer),
linear predictor 128 x 128 without bias, rho = 0.3 (eq. 19), eps = 0.01 added outside the square
root (eq. 18), W set every step (freq = 1), target EMA constant 0.996, SGD lr 0.03 for a batch of
128 (constant, no schedule), momentum 0.9, weight decay 4e-4, 100 epochs, SimCLR-style
augmentation (our moco_v2 preset). These apply to cifar10 / cifar100 / stl10 / synthetic. For
imagenet we keep BYOL's ImageNet recipe (configs/byol.py: ResNet-50, 4096 -> 256 projector, LARS,
cosine schedule) with DirectPred's predictor and the constant EMA of 0.996.

Ambiguous choices and the default taken:
- eps placement: outside the root (the paper's eq. 18 and the README command);
  `objective_config.eps_inside=True` gives sqrt(s + eps).
- the first step predicts with an nn.Linear-like random W, as the official trainer (W is set after
  each update step, from an F that already includes that step's batch).
- the predictor is never trained, also between settings when freq > 1 (the official code trains
  it by SGD in between); it is not in the params, so `optim.predictor_*` does not apply.
- `ema.enabled=False` turns the EMA off (tau = 0: the target is the online network of the step).

Eigenspace tracking: `--config.analysis_every_steps=N` records W against F every N steps
(WORKDIR/analysis.jsonl); `python main.py --mode=plot --workdir=W` draws them.

Run:
  python main.py --config=configs/directpred.py:digits --workdir=runs/directpred_digits
  python main.py --config=configs/directpred.py:cifar10 --workdir=runs/directpred_cifar10
  python main.py --config=configs/directpred.py:digits,tiny --config.analysis_every_steps=20 \
    --workdir=/tmp/directpred_tiny && python main.py --mode=plot --workdir=/tmp/directpred_tiny
"""

import ml_collections

from configs import common


def build(objective: str, arg: str | None) -> ml_collections.ConfigDict:
  """The DirectPred-family config for `objective` ('directpred' or 'directcopy'); the caller
  fills in the options of its F -> W rule."""
  dataset, tiny = common.parse_arg(arg)
  config = common.base_config(objective, dataset)
  config.objective_config = ml_collections.ConfigDict(dict(
      proj_hidden_dim=512,
      proj_dim=128,
      correlation_rho=0.3,   # F <- rho F + (1 - rho) F_batch
      eps=0.01,
      freq=1,                # set W every `freq` steps
  ))
  config.augment.update(common.AUGMENTATIONS["moco_v2"])
  config.optim.update(dict(name="sgd", base_lr=0.03, lr_batch_scale=128, schedule="constant",
                           weight_decay=4e-4, momentum=0.9, warmup_epochs=0.0))
  config.ema.update(dict(tau_base=0.996, schedule="constant"))
  if dataset == "imagenet":
    config.num_epochs = 300
    config.objective_config.update(dict(proj_hidden_dim=4096, proj_dim=256))
    config.augment.update(common.AUGMENTATIONS["byol"])
    config.optim.update(dict(name="lars", base_lr=0.2, lr_batch_scale=256, schedule="cosine",
                             weight_decay=1.5e-6, warmup_epochs=10.0, exclude_bias_and_norm=True))
  elif dataset == "digits":
    # base_config already applied the shared digits preset (ResNet-18 width 16, batch 128).
    # AdamW with the rate and EMA found for the tiny digits preset below; not tuned at this size.
    config.objective_config.proj_dim = 64
    config.optim.update(dict(name="adamw", base_lr=3e-3, lr_batch_scale=256, schedule="cosine",
                             weight_decay=1e-4))
    config.ema.tau_base = 0.99
  else:
    config.model.name = "resnet18"
    config.batch_size = 128
    config.num_epochs = 100
  config = common.finish(config, tiny)
  if tiny and dataset == "digits":
    # AdamW at 3e-3 with an EMA of 0.99 and the paper's eps = 0.01. BYOL's faster tiny recipe
    # (lr 1e-2, EMA 0.97) lets the projections' effective rank collapse to a few dimensions here.
    config.objective_config.update(dict(proj_hidden_dim=256, proj_dim=64))
    config.optim.update(dict(name="adamw", base_lr=3e-3, weight_decay=1e-4, schedule="cosine"))
    config.ema.update(dict(tau_base=0.99, schedule="constant"))
  elif tiny:
    config.objective_config.update(dict(proj_hidden_dim=64, proj_dim=32))
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = build("directpred", arg)
  config.objective_config.eps_inside = False   # eq. 18: p = sqrt(s) + eps
  return config
