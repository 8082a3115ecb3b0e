r"""CKA feature similarity between all stage pairs of two encoders (Kornblith et al. 2019):
linear and RBF kernels (sigma 0.8 fixed, as Kaku et al. 2021, or a median heuristic),
double-centred HSIC, averaged over 50 random subsets of 1,000 examples (all examples once if the
split is smaller). Writes the matrices to results.json and a heatmap per kernel to cka.png.

`eval.cka.other_encoder`: 'random_init' (default: the same architecture freshly initialised),
'' (the encoder against itself: which of its stages are alike), or another exported encoder
directory (e.g. a fine-tuned copy, or another objective's run).

Run:
  python main.py --mode=eval --config=configs/eval/cka.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/cka
  python main.py --mode=eval --config=configs/eval/cka.py:digits \
      --config.encoder=runs/default/encoder \
      --config.eval.cka.other_encoder=runs/byol_digits/encoder \
      --workdir=runs/default/eval/cka_vs_byol
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  # The comparison is built in: eval.cka.other_encoder.
  return common.eval_config("cka", arg, baselines=())
