r"""Every evaluation protocol on one encoder, in one run, into one combined table.

kNN, the linear probe, few-shot episodes, per-layer probes, CKA against a random init,
low-label fine-tuning, saliency and invariance (each with its settings in config.eval.<name>,
as the single-protocol configs beside this file), on the encoder and its baselines. Besides
results.json and each protocol's plots, the workdir gets results.csv (one row per encoder, one
column per metric) and results.tex (a booktabs table, one row per metric).

Run:
  python main.py --mode=eval --config=configs/eval/all.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/all
  python main.py --mode=eval --config=configs/eval/all.py:breastmnist \
      --config.data.root=../shared/data/medmnist --config.encoder=RUN/encoder --workdir=RUN/eval/all

The full fine-tune dominates the time (three label fractions of 500 steps each); `:tiny` runs
every protocol in about a minute on a CPU, for smoke runs.
"""

import ml_collections

from configs.eval import common
from ssl_jax.evaluation.evaluators import EVALUATORS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = common.eval_config("all", arg)
  config.eval.evaluators = tuple(EVALUATORS)
  return config
