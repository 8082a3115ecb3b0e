"""kNN top-1 inside the training split, for choosing settings without looking at the test split.

The training split is cut into `folds` parts by a seeded permutation; each part is classified
by the weighted kNN of the end-of-training table (`ssl_jax.evaluation.knn`) against the other
parts, and the score is the fraction right over the whole split. On small data this is less
noisy than one held-out part (every image is scored once), and it never reads the test split,
so a preset tuned on it reports an honest test figure.

  python -m ssl_jax.evaluation.cross_validated_knn RUN_DIR [RUN_DIR ...]

prints raw pixels' score and each run's exported encoder's, on the run's own data config
(docs/results.md, the default job's table).
"""

from __future__ import annotations

import json
import os
import sys

import ml_collections
import numpy as np

import ssl_jax
from ssl_jax import sharding, train, workdir_config
from ssl_jax.evaluation import baselines
from ssl_jax.evaluation import data as data_lib
from ssl_jax.evaluation import knn as knn_lib


def cross_validated_knn_top1(features: np.ndarray, labels: np.ndarray, *, folds: int, seed: int,
                             k: int, temperature: float, num_classes: int) -> float:
  """Fraction of training examples whose kNN among the other folds predicts their label."""
  labels = np.asarray(labels)
  if not 2 <= folds <= len(labels):
    raise ValueError(f"folds={folds} must be between 2 and the number of examples "
                     f"({len(labels)})")
  order = np.random.default_rng(seed).permutation(len(labels))
  correct = 0
  for part in np.array_split(order, folds):
    bank = np.setdiff1d(order, part)
    predictions = knn_lib.knn_predict(features[bank], labels[bank], features[part], k=k,
                                      temperature=temperature, num_classes=num_classes)
    correct += int(np.sum(predictions == labels[part]))
  return correct / len(labels)


def _score_runs(run_dirs: list[str], folds: int = 5) -> list[tuple[str, float]]:
  """[(name, score)] for raw pixels (of the first run's data) and each run's encoder, on the
  training split as the run's evaluation reads it (its `eval.max_examples` cap included)."""
  scores = []
  for index, run_dir in enumerate(run_dirs):
    with open(os.path.join(run_dir, workdir_config.CONFIG_FILE)) as f:
      config = ml_collections.ConfigDict(json.load(f))
    data = data_lib.EvalData(config, sharding.make_mesh(config.mesh))
    if data.multi_label:
      raise ValueError(f"{run_dir}: {config.data.name} is multi-label data; the cross-validated "
                       "kNN scores top-1 of single-label data only")
    encoders = {os.path.basename(os.path.normpath(run_dir)):
                ssl_jax.load_encoder(os.path.join(run_dir, train.ENCODER_DIR))}
    if index == 0:
      encoders = {"raw pixels": baselines.PixelEncoder.fit(data), **encoders}
    for name, encoder in encoders.items():
      features, labels = data.features(encoder, config.data.train_split)
      scores.append((name, cross_validated_knn_top1(
          np.asarray(features), np.asarray(labels), folds=folds, seed=int(config.seed),
          k=int(tuple(config.eval.knn.ks)[0]), temperature=float(config.eval.knn.temperature),
          num_classes=data.num_classes)))
  return scores


def main(argv: list[str]) -> int:
  if not argv:
    print("usage: python -m ssl_jax.evaluation.cross_validated_knn RUN_DIR [RUN_DIR ...]",
          file=sys.stderr)
    return 2
  not_runs = [run_dir for run_dir in argv
              if not os.path.isfile(os.path.join(run_dir, workdir_config.CONFIG_FILE))
              or not os.path.isdir(os.path.join(run_dir, train.ENCODER_DIR))]
  if not_runs:
    print(f"error: not a finished run (a {workdir_config.CONFIG_FILE} and an exported "
          f"{train.ENCODER_DIR}/): {', '.join(not_runs)}", file=sys.stderr)
    return 2
  try:
    scores = _score_runs(argv)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  for name, score in scores:
    print(f"{name:30s} {score:.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
