r"""CKA feature similarity between all stage pairs of two encoders (Kornblith et al. 2019):
linear and RBF kernels (sigma 0.8 fixed, as Kaku et al. 2021, or a median heuristic),
double-centred HSIC, averaged over 50 random subsets of 1,000 examples (all examples once if the
split is smaller). Writes the matrices to results.json and a heatmap per kernel to cka.png.

`cka.other_encoder`: 'random_init' (default: the same architecture freshly initialised), '' (the
encoder against itself: which of its stages are alike), or another exported encoder directory
(e.g. a fine-tuned copy, or another objective's run).

Run:
  python main.py --mode=eval --config=configs/eval/cka.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/cka
  python main.py --mode=eval --config=configs/eval/cka.py:digits \
      --config.encoder=runs/default/encoder --config.cka.other_encoder=runs/byol_digits/encoder \
      --workdir=runs/default/eval/cka_vs_byol
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config, tiny = common.eval_config("cka", arg)
  config.random_init_baseline = False   # the comparison is built in: cka.other_encoder
  config.cka = ml_collections.ConfigDict(dict(
      other_encoder="random_init",
      split="",                 # '' = data.test_split
      kernels=("linear", "rbf"),
      rbf_sigma=0.8,
      rbf_sigma_mode="fixed",   # 'fixed' (on l2-normalised rows) | 'median' (sigma x median dist)
      num_subsets=5 if tiny else 50,
      subset_size=256 if tiny else 1000,
      spatial_size=0,           # 0: stages globally pooled; S: pooled onto an S x S grid
  ))
  return config
