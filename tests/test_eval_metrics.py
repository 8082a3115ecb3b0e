"""kNN, linear probe and collapse monitors against independent computations."""

import jax
import numpy as np
import numpy_references
import pytest
from sklearn import metrics as sk_metrics
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from ssl_jax import collapse
from ssl_jax.evaluation import knn, linear_probe, metrics


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_matches_brute_force_numpy(k):
  rng = np.random.default_rng(0)
  train = rng.normal(size=(300, 16)).astype(np.float32)
  labels = rng.integers(0, 4, 300)
  train += np.eye(16, dtype=np.float32)[labels] * 2.0   # give the classes some structure
  test = rng.normal(size=(57, 16)).astype(np.float32) + np.eye(16, dtype=np.float32)[labels[:57]]
  expected = numpy_references.weighted_knn_predictions(train, labels, test, k, 0.07, 4)
  got = knn.knn_predict(train, labels, test, k=k, temperature=0.07, num_classes=4, chunk_size=20)
  np.testing.assert_array_equal(got, expected)


def test_knn_k_larger_than_bank_is_clipped():
  train = np.eye(3, dtype=np.float32)
  got = knn.knn_top1(train, np.array([0, 1, 2]), train, np.array([0, 1, 2]), k=200,
                     temperature=0.07, num_classes=3)
  assert got == 1.0


def test_linear_probe_matches_sklearn_logistic_regression():
  images, labels = load_digits(return_X_y=True)
  images = images.astype(np.float32)
  train, test = images[:1200], images[1200:]
  result = linear_probe.linear_probe(train, labels[:1200], test, labels[1200:],
                                     num_classes=10, l2_grid=(1e-3,))
  mean, std = train.mean(0), train.std(0) + 1e-6
  # sklearn's C multiplies the summed loss; our l2 multiplies 0.5 ||w||^2 next to the mean loss.
  reference = LogisticRegression(C=1.0 / (1e-3 * len(train)), max_iter=10_000, tol=1e-8)
  reference.fit((train - mean) / std, labels[:1200])
  expected = reference.score((test - mean) / std, labels[1200:])
  assert result["top1"] == pytest.approx(expected, abs=0.01)
  assert result["top1"] > 0.85


def test_linear_probe_picks_regularisation_on_holdout():
  rng = np.random.default_rng(1)
  # One informative feature among 500 noise features and few examples: the unregularised fit
  # overfits the noise, so the held-out split must choose the strong L2.
  labels = rng.integers(0, 2, 200)
  signal = (labels * 2.0 - 1.0)[:, None] + rng.normal(size=(200, 1)) * 0.5
  features = np.concatenate([signal, rng.normal(size=(200, 500))], axis=1).astype(np.float32)
  weak = linear_probe.linear_probe(features[:100], labels[:100], features[100:],
                                   labels[100:], num_classes=2, l2_grid=(1e-6,))
  both = linear_probe.linear_probe(features[:100], labels[:100], features[100:],
                                   labels[100:], num_classes=2, l2_grid=(1e-6, 1.0))
  assert both["l2"] == 1.0
  assert both["validation_top1"] > weak["validation_top1"]


def test_normalized_std_of_collapsed_and_spread_outputs():
  collapsed = np.tile(np.arange(1, 9, dtype=np.float32), (64, 1))
  assert float(collapse.normalized_std(collapsed)) == pytest.approx(0.0, abs=1e-6)
  spread = np.random.default_rng(0).normal(size=(20_000, 64)).astype(np.float32)
  assert float(collapse.normalized_std(spread)) == pytest.approx(1 / np.sqrt(64), rel=0.02)


@pytest.mark.parametrize("shape", [(32, 8), (8, 32)])
def test_rankme_matches_numpy_svd(shape):
  z = np.random.default_rng(2).normal(size=shape).astype(np.float32)
  z[:, 0] *= 10.0
  singular_values = np.linalg.svd(z, compute_uv=False)
  p = singular_values / singular_values.sum() + 1e-7
  expected = np.exp(-np.sum(p * np.log(p)))
  assert float(collapse.rankme(z)) == pytest.approx(expected, rel=1e-3)
  rank_one = np.outer(np.arange(1, shape[0] + 1), np.ones(shape[1])).astype(np.float32)
  assert float(collapse.rankme(rank_one)) == pytest.approx(1.0, abs=1e-2)


def test_classification_auc_matches_sklearn_binary_and_one_vs_rest():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 5, 300)
  logits = rng.normal(size=(300, 5)) + 1.5 * np.eye(5)[labels]
  probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  assert metrics.classification_auc(labels, probabilities) == pytest.approx(
      sk_metrics.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"),
      abs=1e-12)
  binary = (labels > 2).astype(int)
  two_class = np.stack([1 - probabilities[:, 4], probabilities[:, 4]], axis=1)
  assert metrics.classification_auc(binary, two_class) == pytest.approx(
      sk_metrics.roc_auc_score(binary, two_class[:, 1]), abs=1e-12)


@pytest.mark.parametrize("rank", [1, 8])
def test_rankme_of_a_collapsed_batch_is_its_rank(rank):
  """A batch of 256 x 2048 float32 projections of known low rank, through the jitted monitor as
  the train step runs it, against the same formula on the float64 SVD of the same numbers. The
  square roots of the Gram matrix's float32 eigenvalues read 1.16 and 8.25 here."""
  rng = np.random.default_rng(rank)
  z = (rng.normal(size=(256, rank)) @ rng.normal(size=(rank, 2048))).astype(np.float32)
  singular_values = np.linalg.svd(z.astype(np.float64), compute_uv=False)
  p = singular_values / (singular_values.sum() + 1e-7) + 1e-7
  expected = np.exp(-np.sum(p * np.log(p)))
  assert abs(expected - rank) < 0.05 * rank   # the reference itself sees the collapse
  assert float(jax.jit(collapse.rankme)(z)) == pytest.approx(expected, rel=1e-4)
