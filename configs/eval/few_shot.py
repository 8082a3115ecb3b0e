r"""Few-shot classification on frozen features: 5-way 1/5/20/50-shot episodes, 15 queries per
class, 600 episodes; prototype classifier (or logistic regression); mean and 95 % interval
(1.96 std / sqrt(episodes)).

Episodes are drawn from `eval.few_shot.split` (default: the training split, the larger one: digits'
test split has fewer than 50 + 15 images of some classes). The labels are never seen by a
self-supervised encoder, so drawing from its training images does not leak labels.

Run:
  python main.py --mode=eval --config=configs/eval/few_shot.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/few_shot
  python main.py --mode=eval --config=configs/eval/few_shot.py:digits \
      --config.eval.few_shot.classifier=logistic --config.encoder=runs/default/encoder \
      --workdir=runs/default/eval/few_shot_logistic
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.eval_config("few_shot", arg)
