"""CKA against an independent NumPy computation, and its invariances."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.stats import ortho_group

from configs import common
from ssl_jax import export, models
from ssl_jax.evaluation import cka

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _numpy_linear_cka(x, y):
  """The feature-space form (Kornblith et al. 2019, eq. 5): column-centre, then
  ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)."""
  x = x - x.mean(axis=0)
  y = y - y.mean(axis=0)
  return (np.linalg.norm(y.T @ x) ** 2
          / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _numpy_rbf_cka(x, y, sigma, mode):
  """tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)) with an explicit centring matrix H."""
  def kernel(z):
    if mode == "fixed":
      z = z / np.linalg.norm(z, axis=1, keepdims=True)
    distances = np.array([[np.sum((a - b) ** 2) for b in z] for a in z])
    if mode == "fixed":
      width = sigma ** 2
    else:
      off_diagonal = distances[~np.eye(len(z), dtype=bool)]
      width = sigma ** 2 * np.median(off_diagonal)
    return np.exp(-distances / (2 * width))
  n = len(x)
  h = np.eye(n) - np.ones((n, n)) / n
  k, l = kernel(x.astype(np.float64)), kernel(y.astype(np.float64))
  hsic = lambda a, b: np.trace(a @ h @ b @ h)
  return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def _related(seed=0, n=120):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 12)).astype(np.float32)
  y = np.tanh(x @ rng.normal(size=(12, 7))) + 0.5 * rng.normal(size=(n, 7))
  return x, y.astype(np.float32)


def test_linear_cka_matches_numpy():
  x, y = _related()
  assert cka.cka(x, y, "linear") == pytest.approx(_numpy_linear_cka(x, y), abs=1e-5)


@pytest.mark.parametrize("mode, sigma", [("fixed", 0.8), ("median", 1.0)])
def test_rbf_cka_matches_numpy(mode, sigma):
  x, y = _related(1, 80)
  expected = _numpy_rbf_cka(x, y, sigma, mode)
  assert cka.cka(x, y, "rbf", sigma=sigma, sigma_mode=mode) == pytest.approx(expected, abs=1e-5)
  assert 0.05 < expected < 0.95


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_of_a_representation_with_itself_is_one(kernel):
  x, _ = _related()
  assert cka.cka(x, x, kernel) == pytest.approx(1.0, abs=1e-5)


def test_linear_cka_invariant_to_orthogonal_transform_and_isotropic_scaling():
  x, y = _related(2)
  rotation = ortho_group.rvs(12, random_state=0).astype(np.float32)
  reference = cka.cka(x, y, "linear")
  assert cka.cka(x @ rotation, y, "linear") == pytest.approx(reference, abs=1e-5)
  assert cka.cka(3.7 * x, 0.2 * y, "linear") == pytest.approx(reference, abs=1e-5)
  assert cka.cka(x @ rotation, x, "linear") == pytest.approx(1.0, abs=1e-5)
  # Not invariant to arbitrary invertible maps (that is what separates CKA from CCA).
  stretch = np.diag(np.linspace(0.1, 10, 12)).astype(np.float32)
  assert abs(cka.cka(x @ stretch, x, "linear") - 1.0) > 0.05


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_independent_features_have_near_zero_cka(kernel):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(1000, 10)).astype(np.float32)
  y = rng.normal(size=(1000, 10)).astype(np.float32)
  assert cka.cka(x, y, kernel) < 0.05


def test_subset_average_matches_numpy_on_the_same_subsets():
  x, y = _related(5, 300)
  z = x[:, :4] ** 2
  mean, std, size = cka.subset_cka_matrix([x, z], [y], kernel="linear", num_subsets=6,
                                          subset_size=100, seed=3)
  rng = np.random.default_rng(3)
  expected = np.zeros((6, 2, 1))
  for s in range(6):
    index = np.sort(rng.choice(300, 100, replace=False))
    expected[s, 0, 0] = _numpy_linear_cka(x[index], y[index])
    expected[s, 1, 0] = _numpy_linear_cka(z[index], y[index])
  assert size == 100
  np.testing.assert_allclose(mean, expected.mean(0), atol=1e-5)
  np.testing.assert_allclose(std, expected.std(0), atol=1e-5)


def test_median_sigma_subset_average_matches_eager_and_numpy():
  """The median bandwidth through the jitted subset path (where a boolean mask once made it fail)
  gives, subset by subset, what the eager `cka` and the NumPy computation give."""
  x, y = _related(7, 150)
  z = x[:, :4] ** 2
  mean, std, size = cka.subset_cka_matrix([x, z], [y], kernel="rbf", sigma=1.0,
                                          sigma_mode="median", num_subsets=3, subset_size=60,
                                          seed=2)
  rng = np.random.default_rng(2)
  eager, expected = np.zeros((3, 2, 1)), np.zeros((3, 2, 1))
  for s in range(3):
    index = np.sort(rng.choice(150, 60, replace=False))
    for r, representation in enumerate((x, z)):
      eager[s, r, 0] = cka.cka(representation[index], y[index], "rbf", sigma=1.0,
                               sigma_mode="median")
      expected[s, r, 0] = _numpy_rbf_cka(representation[index], y[index], 1.0, "median")
  assert size == 60
  np.testing.assert_allclose(mean, eager.mean(0), atol=1e-6)
  np.testing.assert_allclose(mean, expected.mean(0), atol=1e-5)
  np.testing.assert_allclose(std, expected.std(0), atol=1e-5)
  # The median bandwidth is not the fixed one here: the comparison tells the modes apart.
  fixed, _, _ = cka.subset_cka_matrix([x, z], [y], kernel="rbf", sigma=1.0, num_subsets=3,
                                      subset_size=60, seed=2)
  assert np.max(np.abs(fixed - mean)) > 0.01


def test_cka_eval_config_with_median_sigma_runs(tmp_path):
  """configs/eval/cka.py with --config.eval.cka.rbf_sigma_mode=median, run as a user runs it, on a
  small random encoder compared with itself: both kernels give a unit diagonal."""
  model_config = ml_collections.ConfigDict(dict(name="resnet10", stem="cifar", width=4,
                                                dtype="float32"))
  module = models.build_backbone(model_config)
  variables = jax.jit(lambda key: module.init(key, jnp.zeros((1, 16, 16, 3)), train=False))(
      jax.random.key(1))
  encoder_dir = export.export_encoder(str(tmp_path / "encoder"), model_config=model_config,
                                      variables=variables, image_size=16,
                                      mean=common.DIGITS_MEAN, std=common.DIGITS_STD)
  command = [sys.executable, os.path.join(REPO, "main.py"), "--mode=eval",
             "--config=" + os.path.join(REPO, "configs", "eval", "cka.py") + ":digits,tiny",
             f"--config.encoder={encoder_dir}", "--config.eval.cka.other_encoder=",
             "--config.eval.cka.rbf_sigma_mode=median", "--workdir=out"]
  result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads((tmp_path / "out" / "results.json").read_text())
  results = written["evaluations"]["cka"]["results"]["encoder"]
  for kernel in ("linear", "rbf"):
    matrix = np.asarray(results["kernels"][kernel]["matrix"])
    assert matrix.shape == (4, 4) and np.all(np.isfinite(matrix))
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)


def test_subset_larger_than_the_data_uses_all_examples_once():
  x, y = _related(6, 90)
  mean, std, size = cka.subset_cka_matrix([x], [y], kernel="linear", num_subsets=50,
                                          subset_size=1000)
  assert size == 90 and std[0, 0] == 0.0
  assert mean[0, 0] == pytest.approx(_numpy_linear_cka(x, y), abs=1e-5)


def test_unknown_kernel_names_the_allowed_ones():
  with pytest.raises(ValueError, match=r"unknown CKA kernel 'poly'; allowed: \['linear', 'rbf'\]"):
    cka.cka(np.ones((4, 2)), np.ones((4, 2)), "poly")
