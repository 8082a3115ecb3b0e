"""Label-fraction subsets, the percentile bootstrap, and a tiny fine-tune that learns."""

import ml_collections
import numpy as np
import pytest

from ssl_jax import export
from ssl_jax.evaluation import fine_tune


def test_subsets_are_stratified_nested_seeded_and_exactly_sized():
  labels = np.repeat(np.arange(4), [150, 100, 40, 7])
  subsets = fine_tune.label_fraction_subsets(labels, (0.01, 0.1, 1.0), seed=3)
  # Per class max(1, round(f * n)): 1% -> 2, 1, 1, 1; 10% -> 15, 10, 4, 1; 100% -> all.
  for fraction, per_class in [(0.01, [2, 1, 1, 1]), (0.1, [15, 10, 4, 1]),
                              (1.0, [150, 100, 40, 7])]:
    np.testing.assert_array_equal(np.bincount(labels[subsets[fraction]], minlength=4), per_class)
    assert len(np.unique(subsets[fraction])) == len(subsets[fraction])
  assert set(subsets[0.01]) <= set(subsets[0.1]) <= set(subsets[1.0])
  again = fine_tune.label_fraction_subsets(labels, (0.1,), seed=3)
  np.testing.assert_array_equal(again[0.1], subsets[0.1])
  other = fine_tune.label_fraction_subsets(labels, (0.1,), seed=4)
  assert not np.array_equal(other[0.1], subsets[0.1])


def test_bad_fraction_is_named():
  with pytest.raises(ValueError, match=r"label fractions must be in \(0, 1\], got 1.5"):
    fine_tune.label_fraction_subsets(np.zeros(10), (1.5,), seed=0)


def test_bootstrap_interval_is_the_percentile_interval():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 200)
  predictions = np.where(rng.random(200) < 0.8, labels, (labels + 1) % 3)
  top1 = lambda y, p: float(np.mean(y == p))
  point, lower, upper = fine_tune.bootstrap_interval(labels, predictions, top1,
                                                     num_samples=500, seed=5)
  # Reference: the same resamples, accuracy of each, then the 2.5 / 97.5 percentiles.
  draws = np.random.default_rng(5).integers(0, 200, (500, 200))
  accuracies = (labels[draws] == predictions[draws]).mean(axis=1)
  assert point == np.mean(labels == predictions)
  assert lower == pytest.approx(np.percentile(accuracies, 2.5), abs=1e-12)
  assert upper == pytest.approx(np.percentile(accuracies, 97.5), abs=1e-12)
  assert lower < point < upper
  perfect = fine_tune.bootstrap_interval(labels, labels, top1, num_samples=50)
  assert perfect == (1.0, 1.0, 1.0)


def _half_bright_images(count, seed):
  """Class 0: the top half is bright; class 1: the bottom half (plus noise)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, count)
  images = rng.integers(0, 60, (count, 16, 16, 3))
  rows = np.arange(16)[None, :, None, None]
  bright = np.where(labels[:, None, None, None] == 0, rows < 8, rows >= 8)
  return np.where(bright, images + 180, images).astype(np.uint8), labels.astype(np.int32)


def test_tiny_fine_tune_learns_the_task():
  import jax
  from configs import common
  from ssl_jax.evaluation import baselines
  # The encoder and settings of the suite's tiny fine-tune (tests/test_eval_suite.py), so the
  # session's compilation cache serves both.
  model_config = ml_collections.ConfigDict(dict(name="resnet10", stem="cifar", width=4,
                                                dtype="float32"))
  encoder = baselines.random_init_encoder(
      export.Encoder(model_config, None, 16, common.DIGITS_MEAN, common.DIGITS_STD, {}), seed=1)
  train_images, train_labels = _half_bright_images(64, 0)
  test_images, test_labels = _half_bright_images(200, 1)
  tuned_variables, predict = fine_tune.fine_tune(encoder, train_images, train_labels,
                                                 num_classes=10, steps=30, batch_size=32,
                                                 learning_rate=0.05)
  assert np.mean(predict(test_images).argmax(-1) == test_labels) > 0.9   # chance is 0.5
  # The backbone itself was trained, not only the head.
  before = jax.tree.leaves(encoder.variables["params"])
  after = jax.tree.leaves(tuned_variables["params"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
