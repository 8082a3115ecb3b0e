"""kNN inside the training split (ssl_jax/evaluation/cross_validated_knn.py), against a
brute-force NumPy computation of the same folds, and its command on a finished run."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ssl_jax.evaluation import cross_validated_knn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _brute_force(features, labels, folds, seed, k, temperature, num_classes):
  """Each example's weighted cosine kNN among the examples outside its fold, one at a time."""
  order = np.random.default_rng(seed).permutation(len(labels))
  fold_of = np.empty(len(labels), int)
  for index, part in enumerate(np.array_split(order, folds)):
    fold_of[part] = index
  unit = features / np.linalg.norm(features, axis=1, keepdims=True)
  right = 0
  for i in range(len(labels)):
    others = np.flatnonzero(fold_of != fold_of[i])
    similarity = unit[others] @ unit[i]
    nearest = others[np.argsort(-similarity)[:k]]
    votes = np.zeros(num_classes)
    np.add.at(votes, labels[nearest], np.exp(unit[nearest] @ unit[i] / temperature))
    right += int(votes.argmax() == labels[i])
  return right / len(labels)


def test_matches_a_brute_force_computation_of_the_same_folds():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 4, size=90)
  # Classes with overlapping clusters, so that the score is neither 0 nor 1.
  features = rng.normal(size=(90, 6)) + 1.2 * np.eye(6)[labels]
  for folds, k in ((5, 7), (3, 1)):
    expected = _brute_force(features, labels, folds, 0, k, 0.07, 4)
    assert 0.3 < expected < 1.0
    assert cross_validated_knn.cross_validated_knn_top1(
        features, labels, folds=folds, seed=0, k=k, temperature=0.07,
        num_classes=4) == pytest.approx(expected)


def test_bad_fold_counts_are_named():
  with pytest.raises(ValueError, match="folds=1 must be between 2 and the number of examples"):
    cross_validated_knn.cross_validated_knn_top1(np.ones((4, 2)), np.zeros(4), folds=1, seed=0,
                                                 k=1, temperature=0.1, num_classes=2)


def test_command_names_a_directory_that_is_not_a_run(tmp_path):
  result = subprocess.run([sys.executable, "-m", "ssl_jax.evaluation.cross_validated_knn",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 2
  assert f"not a finished run (a config.json and an exported encoder/): {tmp_path}" in \
      result.stderr


def test_scores_a_run_directory_and_raw_pixels_on_its_training_split(tmp_path):
  """The command's path: the run's config.json and exported encoder, features of the training
  split, and raw pixels, each against the brute force on features computed here."""
  from configs import common, moco_v2
  from input_pipeline import sources
  from ssl_jax import export, workdir_config
  from ssl_jax.evaluation import baselines

  config = moco_v2.get_config("digits,tiny")
  run = tmp_path / "digits_run"
  run.mkdir()
  workdir_config.record(config, str(run))
  template = export.Encoder(config.model, None, config.data.image_size, common.DIGITS_MEAN,
                            common.DIGITS_STD, {})
  encoder = baselines.random_init_encoder(template, seed=1)
  export.export_encoder(str(run / "encoder"), model_config=config.model,
                        variables=encoder.variables, image_size=config.data.image_size,
                        mean=common.DIGITS_MEAN, std=common.DIGITS_STD, metadata={})

  scores = dict(cross_validated_knn._score_runs([str(run)]))

  source = sources.make_source(config.data, "train")
  examples = [source[i] for i in range(len(source))]
  images = np.stack([example["image"] for example in examples])
  labels = np.asarray([example["label"] for example in examples])
  assert len(labels) == 1347   # the whole training split, never the 450 test images
  pixels = images.reshape(len(images), -1).astype(np.float64) / 255.0
  expected_pixels = _brute_force(pixels - pixels.mean(0), labels, 5, config.seed, 20, 0.07, 10)
  features = np.asarray(encoder.pooled(images), np.float64)
  expected_encoder = _brute_force(features, labels, 5, config.seed, 20, 0.07, 10)
  assert scores == pytest.approx({"raw pixels": expected_pixels, "digits_run": expected_encoder},
                                 abs=1.5 / len(labels))
  assert scores["raw pixels"] > 0.9


def test_multi_label_runs_are_refused_by_name(tmp_path):
  from configs import moco_v2
  from ssl_jax import workdir_config
  config = moco_v2.get_config("digits,tiny")
  config.data.label_type = "multi_label"
  run = tmp_path / "chest_run"
  (run / "encoder").mkdir(parents=True)
  workdir_config.record(config, str(run))
  assert cross_validated_knn.main([str(run)]) == 2
  with pytest.raises(ValueError, match="multi-label data; the cross-validated kNN scores top-1"):
    cross_validated_knn._score_runs([str(run)])
