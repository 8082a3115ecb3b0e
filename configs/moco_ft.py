r"""MoCo v2 + feature transformation (FT): Zhu, Zhao et al., ICCV 2021, "Improving Contrastive
Learning by Visualizing Feature Transformation" (official code DTennant/CL-Visualizing-Feature-
Transformation). The objective: ssl_jax/objectives/moco_ft.py.

Paper defaults (the README's ImageNet command: `--method MoCov2 --epochs 200 --cosine
--batch_size 256 --learning_rate 0.03 --alpha 0.999 --mixnorm --mixnorm_target posneg
--sep_alpha --pos_alpha 2.0 --neg_alpha 1.6 --mask_distribution beta --expolation_mask`):
- the MoCo v2 base: ResNet-50, MLP head 2048 -> 2048 -> 128 on L2-normalised outputs,
  temperature 0.2, queue 65,536, key encoder EMA 0.999, SGD lr 0.03 x batch/256 (batch 256),
  momentum 0.9, weight decay 1e-4, cosine schedule, 200 epochs, MoCo v2 augmentation,
  shuffle-BN;
- FT: positive extrapolation lambda ~ Beta(2, 2) + 1 and negative interpolation
  mu ~ Beta(1.6, 1.6), both on, one scalar each per step (official `--dim_mask none`), no
  re-normalisation after mixing (`postmix_norm` off), mixing from the first step
  (`mix_start_epoch 0`).
Ambiguous choices and the default taken:
- gradient through k' = lambda k + (1 - lambda) q: flows into q as in the official code
  (stop_gradient_mixed_keys=False);
- negative score statistics pooled over all batch x queue pairs (the official notebook averages
  per-query variances; see the objective's docstring);
- start_epoch counts full epochs before mixing (official `epoch > mix_start_epoch`, 1-based).
CIFAR-scale presets take the same MoCo v2 and FT settings (the paper's runs are ImageNet-100/1K).

The digits presets keep MoCo v2's digits departures (queue 1,024, temperature 0.1, EMA 0.99,
AdamW; see configs/moco_v2.py for why), with FT at the paper's settings except that mixing starts
after 5 epochs: mixed from the first step, the projections of a short run stay bunched together
and the encoder ends below its random init; MoCo alone spreads them first.

Run:
  python main.py --config=configs/moco_ft.py:digits --workdir=runs/moco_ft_digits
  python main.py --config=configs/moco_ft.py:imagenet --workdir=runs/moco_ft_imagenet
  python main.py --config=configs/moco_ft.py:digits,tiny --workdir=/tmp/moco_ft_tiny
  python main.py --workdir=/tmp/moco_ft_tiny --mode=plot   # -> plots/feature_transform_scores.png
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, tiny = common.parse_arg(arg)
  config = common.base_config("moco_ft", dataset)
  config.objective_config = ml_collections.ConfigDict(dict(
      # MoCo v2
      proj_hidden_dim=2048,
      proj_dim=128,
      temperature=0.2,
      queue_size=65536,
      symmetric=False,          # FT is defined on the asymmetric MoCo (must stay False)
      bn_mode="shuffle",        # 'global' | 'per_device' | 'shuffle'
      bn_groups=0,              # 0: one BN group per device along the batch
      # Feature transformation
      positive_transform=True,  # q' = l q + (1 - l) k, k' = l k + (1 - l) q
      negative_transform=True,  # n' = m n + (1 - m) n[perm]
      positive_mode="extrapolate",   # 'extrapolate' (l in [1, 2]) | 'interpolate' (l in [0, 1])
      distribution="beta",      # 'beta' | 'uniform'
      positive_alpha=2.0,       # l ~ Beta(2, 2) (+ 1 when extrapolating)
      negative_alpha=1.6,       # m ~ Beta(1.6, 1.6)
      per_dimension="none",     # 'none' | 'positive' | 'negative' | 'both': per-entry draws
      renormalize="none",       # 'none' | 'positive' | 'negative' | 'both': L2 after mixing
      stop_gradient_mixed_keys=False,
      start_epoch=0,            # mix after this many full epochs
  ))
  config.augment.update(common.AUGMENTATIONS["moco_v2"])
  config.optim.update(dict(name="sgd", base_lr=0.03, weight_decay=1e-4, momentum=0.9))
  config.ema.update(dict(tau_base=0.999, schedule="constant"))
  if dataset == "digits":
    config.objective_config.update(dict(proj_hidden_dim=512, queue_size=1024, temperature=0.1))
    config.optim.update(dict(name="adamw", base_lr=1e-3, weight_decay=1e-4))
    config.ema.tau_base = 0.99
    # FT from the first step keeps a short run's projections bunched together (negative scores
    # near 1); MoCo alone spreads them for 5 epochs first (the official start-epoch option).
    config.objective_config.start_epoch = 5
  if tiny:
    config.objective_config.update(dict(proj_hidden_dim=128, proj_dim=64, queue_size=512))
    if dataset == "digits":
      config.optim.base_lr = 3e-3
  return common.finish(config, tiny)
