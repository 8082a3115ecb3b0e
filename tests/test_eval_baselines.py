"""The baselines of every results table against independent computations: the raw-pixel rows
with NumPy and scikit-learn, the random-init rows' definition (one seed, one draw)."""

import ml_collections
import numpy as np
import numpy_references
import pytest
from sklearn.linear_model import LogisticRegression

from configs import common
from engine_helpers import max_abs_difference
from input_pipeline import pipeline
from ssl_jax import export, sharding
from ssl_jax.evaluation import baselines, runner
from ssl_jax.evaluation.data import EvalData

MAX_EXAMPLES = 600


def _digits_data(**eval_overrides):
  config = ml_collections.ConfigDict(dict(
      seed=0, data=common.data_config("digits"), eval=common.evaluation_settings(tiny=True)))
  config.eval.max_examples = MAX_EXAMPLES
  config.eval.update(eval_overrides)
  return EvalData(config, sharding.make_mesh(ml_collections.ConfigDict(
      dict(data=-1, fsdp=1, fsdp_min_size=2**18))))


def _images(data, split):
  batches = list(pipeline.eval_batches(data.config, split, 128, MAX_EXAMPLES))
  return (np.concatenate([b["image"] for b in batches]).astype(np.float64) / 255.0,
          np.concatenate([b["label"] for b in batches]))


def _centred_pixels(data):
  """Pixels minus the training split's mean image, over their root mean square."""
  train, train_labels = _images(data, "train")
  test, test_labels = _images(data, "test")
  train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)
  mean = train.mean(0)
  scale = np.sqrt(np.mean((train - mean) ** 2))
  return (train - mean) / scale, train_labels, (test - mean) / scale, test_labels


def test_pixel_features_are_the_centred_pixels():
  data = _digits_data()
  pixels = baselines.build(None, ("pixels",), data)["pixels"]
  expected_train, _, expected_test, _ = _centred_pixels(data)
  got_train, _ = data.features(pixels, "train")
  got_test, _ = data.features(pixels, "test")
  assert got_train.shape == (MAX_EXAMPLES, 16 * 16 * 3)
  np.testing.assert_allclose(got_train, expected_train, atol=1e-4)
  np.testing.assert_allclose(got_test, expected_test, atol=1e-4)


def test_pixel_rows_match_numpy_knn_and_sklearn_logistic_regression():
  data = _digits_data(evaluators=("knn", "linear"), baselines=("pixels",))
  results = runner.summary_metrics(runner.evaluate(
      baselines.build(None, ("pixels",), data), data))["pixels"]
  train, train_labels, test, test_labels = _centred_pixels(data)
  for k in data.settings.knn.ks:
    predictions = numpy_references.weighted_knn_predictions(
        train, train_labels, test, k, data.settings.knn.temperature, num_classes=10)
    assert results[f"knn_top1_k{k}"] == pytest.approx(np.mean(predictions == test_labels),
                                                      abs=1e-9)
  # The probe at the strength it chose, refit on all training rows, against scikit-learn's
  # multinomial logistic regression on standardised pixels (C multiplies the summed loss; l2 the
  # mean loss's 0.5 ||w||^2).
  mean, std = train.mean(0), train.std(0) + 1e-6
  reference = LogisticRegression(C=1.0 / (results["linear_l2"] * len(train)), max_iter=10_000,
                                 tol=1e-8).fit((train - mean) / std, train_labels)
  assert results["linear_top1"] == pytest.approx(
      reference.score((test - mean) / std, test_labels), abs=0.01)
  assert results["linear_top1"] > 0.85 and results["knn_top1"] > 0.85


def test_random_init_is_one_draw_of_the_seed():
  """Both random-init rows start from the same weights: one definition, the evaluation's seed."""
  data = _digits_data(baselines=("random_init", "random_init_data_bn"))
  model_config = ml_collections.ConfigDict(dict(name="resnet10", stem="cifar", width=4,
                                                dtype="float32"))
  encoder = export.Encoder(model_config, None, 16, common.DIGITS_MEAN, common.DIGITS_STD, {})
  built = baselines.build(encoder, data.settings.baselines, data)
  again = baselines.random_init_encoder(encoder, data.seed)
  assert max_abs_difference(built["random_init"].variables, again.variables) == 0
  assert max_abs_difference(built["random_init_data_bn"].variables["params"],
                            again.variables["params"]) == 0
  other_seed = baselines.random_init_encoder(encoder, data.seed + 1)
  assert max_abs_difference(other_seed.variables["params"], again.variables["params"]) > 0
  # Measured statistics, not the initial 0 / 1.
  assert max_abs_difference(built["random_init_data_bn"].variables["batch_stats"],
                            again.variables["batch_stats"]) > 0.01


def test_unknown_baseline_names_the_allowed_ones():
  with pytest.raises(ValueError, match=r"unknown baselines \['supervised'\]; allowed: "
                                       r"\['random_init', 'random_init_data_bn', 'pixels'\]"):
    baselines.check_names(("pixels", "supervised"))
