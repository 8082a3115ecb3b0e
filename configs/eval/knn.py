r"""Weighted kNN on frozen pooled features (Wu et al. 2018): cosine similarity, the k nearest
training examples vote with weight exp(similarity / 0.07); k = 20 and 200.

Run:
  python main.py --mode=eval --config=configs/eval/knn.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/knn
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.eval_config("knn", arg)
