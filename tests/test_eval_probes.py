"""Linear probe, kNN, few-shot and metrics on features of known structure, against exact
expected values and independent computations (scikit-learn, NumPy)."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics
from sklearn.linear_model import LogisticRegression

from ssl_jax.evaluation import few_shot, knn, linear_probe, metrics

# Three tight clusters on orthogonal axes. Test points sit in a cluster but may carry another
# class's label, so every classifier that is right about the clusters scores exactly:
#   cluster 0: 200 points labelled 0; cluster 1: 50 labelled 1 and 50 labelled 2;
#   cluster 2: 100 labelled 2  ->  top-1 350/400 = 0.875,
#   recall 1, 1, 100/150 -> mean per class (1 + 1 + 2/3) / 3.
EXPECTED_TOP1 = 350 / 400
EXPECTED_MEAN_PER_CLASS = (1 + 1 + 2 / 3) / 3


def _clusters(seed=0, dim=8):
  rng = np.random.default_rng(seed)
  centres = np.eye(dim, dtype=np.float32)[:3] * 10.0
  train_labels = np.repeat(np.arange(3), 100)
  train = centres[train_labels] + rng.normal(size=(300, dim)).astype(np.float32) * 0.5
  test_clusters = np.repeat([0, 1, 2], [200, 100, 100])
  test_labels = test_clusters.copy()
  test_labels[200:250] = 2
  test = centres[test_clusters] + rng.normal(size=(400, dim)).astype(np.float32) * 0.5
  return train, train_labels, test, test_labels


def test_linear_probe_exact_accuracy_on_separable_gaussians():
  train, train_labels, test, test_labels = _clusters()
  result = linear_probe.linear_probe(train, train_labels, test, test_labels, num_classes=3,
                                     l2_grid=linear_probe.TRANSFER_L2_GRID)
  assert result["top1"] == EXPECTED_TOP1
  assert result["mean_per_class"] == pytest.approx(EXPECTED_MEAN_PER_CLASS, abs=1e-12)
  assert result["validation_top1"] == 1.0


def test_transfer_grid_is_45_log_spaced_values():
  grid = np.asarray(linear_probe.TRANSFER_L2_GRID)
  assert len(grid) == 45 and grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e5)
  np.testing.assert_allclose(np.diff(np.log10(grid)), 11 / 44, rtol=1e-9)


def _overlapping(seed, n, dim=10, classes=4):
  means = np.random.default_rng(100).normal(size=(classes, dim)) * 0.5   # shared by all splits
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n)
  return (means[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def test_probe_agrees_with_sklearn_after_selection_and_refit():
  """The chosen strength refit on the whole training split (train + validation) matches
  scikit-learn's multinomial logistic regression fit on the same data at the same strength."""
  train, train_labels = _overlapping(0, 600)
  test, test_labels = _overlapping(1, 2000)
  result = linear_probe.linear_probe(train, train_labels, test, test_labels, num_classes=4,
                                     l2_grid=np.logspace(-4, 1, 11), iterations=500)
  mean, std = train.mean(0), train.std(0) + 1e-6
  # sklearn's C multiplies the summed loss; our l2 multiplies 0.5 ||w||^2 next to the mean loss.
  reference = LogisticRegression(C=1.0 / (result["l2"] * len(train)), max_iter=10_000, tol=1e-10)
  reference.fit((train - mean) / std, train_labels)
  predictions = reference.predict((test - mean) / std)
  assert result["top1"] == pytest.approx(np.mean(predictions == test_labels), abs=0.01)
  assert 0.4 < result["top1"] < 0.95   # a problem where the regulariser matters


def test_multilabel_probe_matches_sklearn_per_label_heads():
  rng = np.random.default_rng(3)
  features = rng.normal(size=(900, 6)).astype(np.float32)
  mixing = rng.normal(size=(6, 4))
  targets = (features @ mixing + rng.normal(size=(900, 4)) * 1.5 > 0.3).astype(np.int32)
  train, test = features[:600], features[600:]
  result = linear_probe.multilabel_linear_probe(train, targets[:600], test, targets[600:],
                                                l2_grid=(1e-3,), iterations=500)
  mean, std = train.mean(0), train.std(0) + 1e-6
  scores = np.stack([
      LogisticRegression(C=1.0 / (1e-3 * 600), max_iter=10_000, tol=1e-10)
      .fit((train - mean) / std, targets[:600, j]).decision_function((test - mean) / std)
      for j in range(4)], axis=1)
  expected = sk_metrics.roc_auc_score(targets[600:], scores, average="macro")
  assert result["mean_auc"] == pytest.approx(expected, abs=0.005)
  assert result["mean_auc"] > 0.75


@pytest.mark.parametrize("k", [20, 200])
def test_knn_exact_accuracy_on_clusters(k):
  train, train_labels, test, test_labels = _clusters()
  predictions = knn.knn_predict(train, train_labels, test, k=k, temperature=0.07, num_classes=3)
  assert np.mean(predictions == test_labels) == EXPECTED_TOP1


def test_knn_votes_are_temperature_weighted():
  # One neighbour at similarity 1 (class 0) outvotes two at similarity 0.8 (class 1) only
  # because votes weigh exp(s / 0.07): e^14.3 > 2 e^11.4. A plain majority of 3 would say 1.
  train = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, 0.6]], np.float32)
  labels = np.array([0, 1, 1])
  query = np.array([[1.0, 0.0]], np.float32)
  assert knn.knn_predict(train, labels, query, k=3, temperature=0.07, num_classes=2)[0] == 0
  assert knn.knn_predict(train, labels, query, k=3, temperature=10.0, num_classes=2)[0] == 1


def test_episodes_are_reproducible_balanced_and_disjoint():
  labels = np.repeat(np.arange(8), 30)
  kwargs = dict(n_way=5, k_shot=5, n_query=15, num_episodes=40)
  support, query = few_shot.sample_episodes(labels, seed=7, **kwargs)
  again_support, again_query = few_shot.sample_episodes(labels, seed=7, **kwargs)
  np.testing.assert_array_equal(support, again_support)
  np.testing.assert_array_equal(query, again_query)
  other_support, _ = few_shot.sample_episodes(labels, seed=8, **kwargs)
  assert not np.array_equal(support, other_support)
  assert support.shape == (40, 5, 5) and query.shape == (40, 5, 15)
  for episode_support, episode_query in zip(support, query):
    row_classes = labels[episode_support[:, 0]]
    assert len(set(row_classes)) == 5                       # N distinct classes
    for row, cls in enumerate(row_classes):                 # each row is one class, K + Q of it
      assert np.all(labels[episode_support[row]] == cls)
      assert np.all(labels[episode_query[row]] == cls)
    everything = np.concatenate([episode_support.ravel(), episode_query.ravel()])
    assert len(np.unique(everything)) == everything.size    # no example used twice


def test_episodes_name_the_shortage():
  labels = np.repeat(np.arange(6), 20)
  with pytest.raises(ValueError, match="5 classes with at least 65 examples"):
    few_shot.sample_episodes(labels, n_way=5, k_shot=50, n_query=15, num_episodes=1, seed=0)


def test_confidence_interval_formula():
  accuracies = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
  expected = 1.96 * np.sqrt(np.mean((accuracies - 0.5) ** 2)) / np.sqrt(5)
  assert few_shot.confidence_interval95(accuracies) == pytest.approx(expected, rel=1e-12)


def _numpy_prototype_accuracy(features, support, query):
  normalised = features / np.linalg.norm(features, axis=1, keepdims=True)
  accuracies = []
  for episode_support, episode_query in zip(support, query):
    prototypes = normalised[episode_support].mean(axis=1)
    correct = 0
    for row in range(len(episode_query)):
      for index in episode_query[row]:
        distances = np.linalg.norm(prototypes - normalised[index], axis=1)
        correct += int(np.argmin(distances) == row)
    accuracies.append(correct / episode_query.size)
  return np.array(accuracies)


def test_prototype_classifier_matches_numpy_and_is_exact_on_clusters():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), 40)
  noisy = (rng.normal(size=(10, 16))[labels] + rng.normal(size=(400, 16)) * 1.2).astype(np.float32)
  support, query = few_shot.sample_episodes(labels, n_way=5, k_shot=5, n_query=15,
                                            num_episodes=30, seed=0)
  got = few_shot.episode_accuracies(noisy, support, query, chunk=10)   # 3 chunks
  np.testing.assert_allclose(got, _numpy_prototype_accuracy(noisy, support, query), atol=1e-6)
  assert 0.3 < got.mean() < 0.99

  separated = (np.eye(16)[labels] * 5 + rng.normal(size=(400, 16)) * 0.1).astype(np.float32)
  results = few_shot.few_shot(separated, labels, shots=(1, 5), num_episodes=30)
  assert results["5way_1shot"] == {"mean": 1.0, "ci95": 0.0, "episodes": 30}
  assert results["5way_5shot"]["mean"] == 1.0
  logistic = few_shot.few_shot(separated, labels, shots=(5,), num_episodes=30,
                               classifier="logistic")
  assert logistic["5way_5shot"]["mean"] == 1.0


def test_metrics_match_sklearn():
  rng = np.random.default_rng(0)
  targets = rng.integers(0, 2, 300)
  scores = np.round(targets * 0.5 + rng.normal(size=300), 1)   # rounding makes ties
  assert metrics.binary_auc(targets, scores) == pytest.approx(
      sk_metrics.roc_auc_score(targets, scores), abs=1e-12)
  multi_targets = rng.integers(0, 2, (300, 5))
  multi_scores = multi_targets * 0.7 + rng.normal(size=(300, 5))
  assert metrics.multilabel_mean_auc(multi_targets, multi_scores) == pytest.approx(
      sk_metrics.roc_auc_score(multi_targets, multi_scores, average="macro"), abs=1e-12)
  grades = rng.integers(0, 5, 400)
  predicted = np.clip(grades + rng.integers(-1, 2, 400), 0, 4)
  assert metrics.quadratic_weighted_kappa(grades, predicted) == pytest.approx(
      sk_metrics.cohen_kappa_score(grades, predicted, weights="quadratic"), abs=1e-12)
  assert metrics.mean_per_class_accuracy(grades, predicted) == pytest.approx(
      sk_metrics.balanced_accuracy_score(grades, predicted), abs=1e-12)


def test_binary_probe_reports_auc():
  train, train_labels = _overlapping(0, 400, classes=2)
  test, test_labels = _overlapping(1, 400, classes=2)
  result = linear_probe.linear_probe(train, train_labels, test, test_labels, num_classes=2)
  assert 0.5 < result["auc"] <= 1.0
