"""Loss pieces shared by the objectives: normalisation, cosine similarity, queue InfoNCE.

All functions are pure math on projections (no networks), so tests can check them against NumPy
directly, and compute in float32 whatever the model's compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# Same floor as torch.nn.functional.normalize, which the reference implementations use.
NORMALIZE_EPS = 1e-12


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = NORMALIZE_EPS) -> jax.Array:
  """x / max(||x||, eps) along `axis`, in float32."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine similarity of (N, d) arrays -> (N,)."""
  return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def queue_info_nce(queries: jax.Array, keys: jax.Array, queue: jax.Array,
                   temperature: float) -> tuple[jax.Array, jax.Array]:
  """MoCo's InfoNCE: each query's positive is its own key, the negatives are the queue rows.

  Args:
    queries: (N, d) query projections (normalised here).
    keys: (N, d) key projections (normalised here; treated as constants: no gradient).
    queue: (K, d) unit-norm negatives from earlier batches (no gradient).
    temperature: the softmax temperature tau.
  Returns:
    (mean cross-entropy over the batch with the positive at logit index 0, top-1 accuracy of the
    positive among the K + 1 logits).
  """
  q = l2_normalize(queries)
  k = jax.lax.stop_gradient(l2_normalize(keys))
  queue = jax.lax.stop_gradient(queue.astype(jnp.float32))
  positive = jnp.sum(q * k, axis=-1, keepdims=True)          # (N, 1)
  negatives = q @ queue.T                                      # (N, K)
  logits = jnp.concatenate([positive, negatives], axis=1) / temperature
  labels = jnp.zeros(logits.shape[0], jnp.int32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  accuracy = jnp.mean((jnp.argmax(logits, axis=1) == 0).astype(jnp.float32))
  return loss, accuracy
