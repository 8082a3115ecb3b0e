r"""Few-shot classification on frozen features: 5-way 1/5/20/50-shot episodes, 15 queries per
class, 600 episodes; prototype classifier (or logistic regression); mean and 95 % interval
(1.96 std / sqrt(episodes)).

Episodes are drawn from `few_shot.split` (default: the training split, the larger one: digits'
test split has fewer than 50 + 15 images of some classes). The labels are never seen by a
self-supervised encoder, so drawing from its training images does not leak labels.

Run:
  python main.py --mode=eval --config=configs/eval/few_shot.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/few_shot
  python main.py --mode=eval --config=configs/eval/few_shot.py:digits \
      --config.few_shot.classifier=logistic --config.encoder=runs/default/encoder \
      --workdir=runs/default/eval/few_shot_logistic
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config, tiny = common.eval_config("few_shot", arg)
  config.few_shot = ml_collections.ConfigDict(dict(
      split="",                   # '' = data.train_split
      n_way=5,
      shots=(1, 5) if tiny else (1, 5, 20, 50),
      n_query=15,
      episodes=20 if tiny else 600,
      classifier="prototype",     # 'prototype' | 'logistic'
      logistic_l2=1e-2,           # L2 of the logistic option (on l2-normalised features)
  ))
  return config
