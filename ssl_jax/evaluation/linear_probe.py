"""Linear probe: multinomial logistic regression with L2 on frozen, standardised features.

The L2 strength is chosen on a held-out part of the training split from a log-spaced grid, then
the probe is refit on the whole training split and scored on the test split. Each fit is a
full-batch L-BFGS solve of a convex problem, and the whole grid is solved at once with `vmap`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_L2_GRID = tuple(np.logspace(-6, 0, 7))


def _objective(weights, features, onehot, l2):
  logits = features @ weights["w"] + weights["b"]
  data_loss = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1))
  return data_loss + 0.5 * l2 * jnp.sum(weights["w"] ** 2)


@functools.partial(jax.jit, static_argnames=("num_classes", "iterations"))
def _fit_grid(features, labels, l2_grid, num_classes: int, iterations: int):
  """Weights minimising the L2-regularised cross-entropy, one solution per value of `l2_grid`."""
  onehot = jax.nn.one_hot(labels, num_classes)
  init = {"w": jnp.zeros((features.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

  def fit_one(l2):
    loss = functools.partial(_objective, features=features, onehot=onehot, l2=l2)
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def body(_, carry):
      weights, solver_state = carry
      value, grad = value_and_grad(weights, state=solver_state)
      updates, solver_state = solver.update(grad, solver_state, weights, value=value, grad=grad,
                                            value_fn=loss)
      return optax.apply_updates(weights, updates), solver_state

    weights, _ = jax.lax.fori_loop(0, iterations, body, (init, solver.init(init)))
    return weights

  return jax.vmap(fit_one)(l2_grid)


def _accuracy(weights, features, labels) -> np.ndarray:
  """Top-1 accuracy of every fitted probe in a stacked `weights` (one per grid value)."""
  logits = jnp.einsum("nd,gdc->gnc", features, weights["w"]) + weights["b"][:, None, :]
  return np.asarray(jnp.mean(jnp.argmax(logits, -1) == labels[None, :], axis=-1))


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


def linear_probe_top1(train_features: np.ndarray, train_labels: np.ndarray,
                      test_features: np.ndarray, test_labels: np.ndarray, *, num_classes: int,
                      l2_grid=DEFAULT_L2_GRID, holdout_fraction: float = 0.2,
                      iterations: int = 200, seed: int = 0) -> dict[str, float]:
  """Returns {'top1': test accuracy, 'l2': the chosen L2 strength, 'holdout_top1': its
  accuracy on the held-out part of the training split}."""
  mean = train_features.mean(axis=0)
  std = train_features.std(axis=0) + 1e-6
  train = jnp.asarray((train_features - mean) / std)
  test = jnp.asarray((test_features - mean) / std)
  train_labels = jnp.asarray(train_labels)
  grid = jnp.asarray(l2_grid, jnp.float32)

  fit_index, holdout_index = _stratified_holdout(np.asarray(train_labels), holdout_fraction, seed)
  grid_weights = _fit_grid(train[fit_index], train_labels[fit_index], grid, num_classes,
                           iterations)
  holdout_accuracy = _accuracy(grid_weights, train[holdout_index], train_labels[holdout_index])
  best = int(np.argmax(holdout_accuracy))

  final_weights = _fit_grid(train, train_labels, grid[best:best + 1], num_classes, iterations)
  test_accuracy = _accuracy(final_weights, test, jnp.asarray(test_labels))[0]
  return {"top1": float(test_accuracy), "l2": float(grid[best]),
          "holdout_top1": float(holdout_accuracy[best])}
