r"""Fine-tuning with 1 %, 10 % and 100 % of the training labels (stratified, seeded, nested
subsets): the whole encoder plus a linear head, SGD with Nesterov momentum 0.9 and a cosine
schedule, no weight decay (as SimCLR's semi-supervised protocol); test top-1 with a 95 %
percentile-bootstrap interval. Each fine-tuned backbone is exported to
WORKDIR/fine_tuned_<pct>pct/ (an encoder directory: CKA can compare it with the pretrained one).

Run:
  python main.py --mode=eval --config=configs/eval/fine_tune.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/fine_tune
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  # Fine-tuning the random init is supervised training from scratch; its BN statistics come
  # from the training batches either way.
  return common.eval_config("fine_tune", arg, baselines=("random_init",))
