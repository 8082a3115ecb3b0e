"""Linear probe: L2-regularised logistic regression on frozen, standardised features.

Protocol (Kornblith, Shlens, Le 2019, "Do better ImageNet models transfer better?"): the L2
strength is chosen on a validation split held out of the training split, from a log-spaced grid
(they used 45 values; `TRANSFER_L2_GRID`), then the probe is refit on train + validation and
scored on the test split. Single-label data gets a multinomial (softmax) probe; multi-label data
(targets of shape (N, labels)) gets one sigmoid head per label and is scored by mean AUC.

Each fit is a full-batch L-BFGS solve of a convex problem, and the whole grid is solved at once
with `vmap`, so the probe runs on the accelerator from features extracted once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.evaluation import metrics as metrics_lib

# The transfer-study grid: 45 log-spaced strengths from 1e-6 to 1e5 (of the mean loss).
TRANSFER_L2_GRID = tuple(np.logspace(-6, 5, 45))
SELECTION_METRICS = ("top1", "mean_per_class")


def _objective(weights, features, targets, example_weights, l2, multilabel: bool):
  logits = features @ weights["w"] + weights["b"]
  if multilabel:
    per_example = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
  else:
    per_example = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)
  data_loss = jnp.sum(example_weights * per_example) / jnp.sum(example_weights)
  return data_loss + 0.5 * l2 * jnp.sum(weights["w"] ** 2)


def _initial_weights(features, targets):
  return {"w": jnp.zeros((features.shape[1], targets.shape[1]), jnp.float32),
          "b": jnp.zeros((targets.shape[1],), jnp.float32)}


def fit_logistic(features, targets, l2, *, multilabel: bool = False, iterations: int = 200,
                 init=None, tolerance: float = 0.0, example_weights=None):
  """{'w', 'b'} minimising the mean cross-entropy + l2/2 ||w||^2; `targets` are one-hot (or
  multi-hot for `multilabel`) rows; `example_weights` (default ones) weigh the mean, so a 0/1
  mask fits a subset without changing shapes. L-BFGS from `init` (default zeros) for at most
  `iterations` steps, stopping early once the gradient norm is below `tolerance`. Pure and
  traceable: callers jit and vmap it."""
  init = _initial_weights(features, targets) if init is None else init
  if example_weights is None:
    example_weights = jnp.ones((features.shape[0],), jnp.float32)
  loss = functools.partial(_objective, features=features, targets=targets,
                           example_weights=example_weights, l2=l2, multilabel=multilabel)
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry):
    weights, solver_state, iteration, _ = carry
    value, grad = value_and_grad(weights, state=solver_state)
    updates, solver_state = solver.update(grad, solver_state, weights, value=value, grad=grad,
                                          value_fn=loss)
    return (optax.apply_updates(weights, updates), solver_state, iteration + 1,
            optax.tree.norm(grad))

  def not_done(carry):
    _, _, iteration, grad_norm = carry
    return (iteration < iterations) & (grad_norm >= tolerance)

  carry = (init, solver.init(init), jnp.asarray(0), jnp.asarray(jnp.inf, jnp.float32))
  weights, _, _, _ = jax.lax.while_loop(not_done, step, carry)
  return weights


# Converged enough that the argmax (and AUC) no longer moves, and reachable in float32.
_GRADIENT_TOLERANCE = 1e-5


@functools.partial(jax.jit, static_argnames=("multilabel", "iterations"))
def _fit_grid(features, targets, example_weights, l2_grid, multilabel: bool, iterations: int):
  """One solution per value of `l2_grid`, stacked along a leading axis.

  The grid is solved as a regularisation path, strongest L2 first, each solve warm-started from
  the previous solution and stopped at convergence: neighbouring strengths have close optima, so
  a 45-value grid costs a few times one cold solve (vmapping independent solves instead costs 45
  times the slowest one)."""
  order = jnp.argsort(-l2_grid)

  def solve(previous, l2):
    weights = fit_logistic(features, targets, l2, multilabel=multilabel, iterations=iterations,
                           init=previous, tolerance=_GRADIENT_TOLERANCE,
                           example_weights=example_weights)
    return weights, weights

  _, path = jax.lax.scan(solve, _initial_weights(features, targets), l2_grid[order])
  inverse = jnp.argsort(order)
  return jax.tree.map(lambda leaf: leaf[inverse], path)


def _logits(weights, features) -> np.ndarray:
  """(grid, N, C) logits of every fitted probe in a stacked `weights`."""
  return np.asarray(jnp.einsum("nd,gdc->gnc", features, weights["w"]) + weights["b"][:, None, :])


def _stratified_holdout(labels: np.ndarray, fraction: float, seed: int):
  """Indices (fit, holdout) with `fraction` of every class held out."""
  rng = np.random.default_rng(seed)
  fit, holdout = [], []
  for cls in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == cls))
    count = int(round(fraction * len(members))) if len(members) > 1 else 0
    holdout.extend(members[:count])
    fit.extend(members[count:])
  return np.sort(np.asarray(fit, np.int64)), np.sort(np.asarray(holdout, np.int64))


def _standardise(train_features, test_features):
  mean = train_features.mean(axis=0)
  std = train_features.std(axis=0) + 1e-6
  return (jnp.asarray((train_features - mean) / std, jnp.float32),
          jnp.asarray((test_features - mean) / std, jnp.float32))


def _check_grid(l2_grid) -> jax.Array:
  grid = np.asarray(l2_grid, np.float32).ravel()
  if grid.size == 0 or np.any(grid < 0):
    raise ValueError(f"the L2 grid must hold non-negative values, got {list(l2_grid)}")
  return jnp.asarray(grid)


def _select_and_refit(train, targets, fit_index, grid, multilabel, iterations, score_fn):
  """(chosen grid index, its validation score, weights refit on all rows at that strength).

  The validation fit and the refit are one compiled program: the validation rows are masked
  out by example weights rather than sliced away, and the refit solves a grid of the same
  length holding only the chosen value (after the first solve, warm starts converge at once)."""
  count = train.shape[0]
  if len(fit_index) == count:   # nothing held out: nothing to choose by
    best, validation_score = 0, float("nan")
  else:
    mask = np.zeros((count,), np.float32)
    mask[fit_index] = 1.0
    grid_weights = _fit_grid(train, targets, jnp.asarray(mask), grid, multilabel, iterations)
    scores = score_fn(grid_weights)
    best = int(np.argmax(scores))   # ties: the first, i.e. the smallest tied L2 strength
    validation_score = float(scores[best])
  chosen = jnp.full_like(grid, grid[best])
  final = _fit_grid(train, targets, jnp.ones((count,), jnp.float32), chosen, multilabel,
                    iterations)
  return best, validation_score, jax.tree.map(lambda leaf: leaf[:1], final)


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, test_labels: np.ndarray, *, num_classes: int,
                 l2_grid=TRANSFER_L2_GRID, holdout_fraction: float = 0.2,
                 select_by: str = "top1", iterations: int = 200, seed: int = 0
                 ) -> dict[str, float]:
  """Multinomial probe. Returns {'top1', 'mean_per_class', 'kappa' (quadratic-weighted),
  'l2' (chosen), 'validation_<select_by>' (its validation score), 'auc'} with the AUC of
  `metrics.classification_auc` (binary, or mean one-vs-rest)."""
  if select_by not in SELECTION_METRICS:
    raise ValueError(f"unknown select_by {select_by!r}; allowed: {list(SELECTION_METRICS)}")
  train, test = _standardise(train_features, test_features)
  train_labels = np.asarray(train_labels)
  test_labels = np.asarray(test_labels)
  grid = _check_grid(l2_grid)
  onehot = jax.nn.one_hot(jnp.asarray(train_labels), num_classes)

  fit_index, holdout_index = _stratified_holdout(train_labels, holdout_fraction, seed)

  def validation_scores(grid_weights):
    predictions = _logits(grid_weights, train[holdout_index]).argmax(-1)
    return [metrics_lib.CLASSIFICATION_METRICS[select_by](train_labels[holdout_index], p)
            for p in predictions]

  # Chosen on the validation split, then refit on train + validation (the whole training split).
  best, validation_score, final_weights = _select_and_refit(
      train, onehot, fit_index, grid, False, iterations, validation_scores)
  logits = _logits(final_weights, test)[0]
  predictions = logits.argmax(-1)
  results = {
      "top1": metrics_lib.top1(test_labels, predictions),
      "mean_per_class": metrics_lib.mean_per_class_accuracy(test_labels, predictions),
      "kappa": metrics_lib.quadratic_weighted_kappa(test_labels, predictions, num_classes),
      "l2": float(grid[best]),
      f"validation_{select_by}": validation_score,
  }
  probabilities = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
  results["auc"] = metrics_lib.classification_auc(test_labels, probabilities)
  return results


def multilabel_linear_probe(train_features: np.ndarray, train_targets: np.ndarray,
                            test_features: np.ndarray, test_targets: np.ndarray, *,
                            l2_grid=TRANSFER_L2_GRID, holdout_fraction: float = 0.2,
                            iterations: int = 200, seed: int = 0) -> dict[str, float]:
  """Per-label sigmoid heads on (N, labels) 0/1 targets. Returns {'mean_auc', 'l2',
  'validation_mean_auc'}; the strength is chosen by mean AUC on a random validation split."""
  train, test = _standardise(train_features, test_features)
  train_targets = np.asarray(train_targets, np.float32)
  if train_targets.ndim != 2:
    raise ValueError(f"multi-label targets must be (N, labels), got {train_targets.shape}")
  grid = _check_grid(l2_grid)
  order = np.random.default_rng(seed).permutation(len(train_targets))
  holdout_size = int(round(holdout_fraction * len(order)))
  holdout_index, fit_index = np.sort(order[:holdout_size]), np.sort(order[holdout_size:])

  def validation_scores(grid_weights):
    return [metrics_lib.multilabel_mean_auc(train_targets[holdout_index], logits)
            for logits in _logits(grid_weights, train[holdout_index])]

  best, validation_score, final_weights = _select_and_refit(
      train, jnp.asarray(train_targets), fit_index, grid, True, iterations, validation_scores)
  test_scores = _logits(final_weights, test)[0]   # sigmoid is monotone: logits rank alike
  return {"mean_auc": metrics_lib.multilabel_mean_auc(test_targets, test_scores),
          "l2": float(grid[best]), "validation_mean_auc": validation_score}
