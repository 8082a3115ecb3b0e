"""MoCo + feature transformation (FT): Zhu, Zhao et al., ICCV 2021, "Improving Contrastive Learning
by Visualizing Feature Transformation"; official code DTennant/CL-Visualizing-Feature-Transformation
(`memory/mem_moco.py`, class `RGBMoCo_dropmix_norm`, selected by `--mixnorm`).

MoCo v2 (the networks, shuffle-BN, the queue and its ring-buffer update are `MocoV2`'s, unchanged)
with the contrastive logits computed on transformed features:

- Positive extrapolation: q' = lambda q + (1 - lambda) k and k' = lambda k + (1 - lambda) q, both
  from the original q and k, with lambda ~ Beta(2, 2) + 1 in [1, 2]. The pair is pushed apart
  along q - k, so the positive score falls: a harder positive.
- Negative interpolation: n' = mu n + (1 - mu) n[perm] for every queue row, with perm a random
  permutation of the queue and mu ~ Beta(1.6, 1.6): new, more diverse negatives.

Where the transform sits: after the L2 normalisation of the projections (the official heads end in
`Normalize(2)`, and the mixing happens in the memory module on their outputs) and, by default,
without normalising again, so the logits are dot products of vectors that are no longer unit norm
(the official `postmix_norm` is off in the published command). `renormalize` re-normalises after
mixing; note that the official `postmix_norm` only ever normalised the positives (its
`norm_target` is hard-wired to 'pos'), which is `renormalize='positive'` here.

Gradients: k comes from the key encoder under stop-gradient, as in MoCo; the queue has none.
q' and k' both contain q, and the official code lets the gradient flow through both (only the
original k is detached), which is the default here; `stop_gradient_mixed_keys=True` detaches k'.

Draws (official flags of the published command: `--mixnorm_target posneg --sep_alpha
--pos_alpha 2.0 --neg_alpha 1.6 --mask_distribution beta --expolation_mask`, `--dim_mask none`):
one scalar lambda and one scalar mu per step. `positive_transform` / `negative_transform` switch
each part on its own (official `--mixnorm_target` 'pos' | 'neg' | 'posneg'). `per_dimension`
('positive' | 'negative' | 'both') draws instead one coefficient per entry of q (N, d) and/or of
the queue (K, d), as the official `dim_mask`: every feature dimension of every vector gets its
own mixing weight. `distribution='uniform'` draws U[0, 1) (plus 1 for extrapolated positives)
instead of the Beta laws. `positive_mode='interpolate'` drops the +1 (positive interpolation, the
official code without `--expolation_mask`).

Start: the official trainer mixes when `epoch > mix_start_epoch` with epochs counted from 1, i.e.
after `mix_start_epoch` full epochs. `start_epoch` here means the same: mixing from step
`start_epoch * steps_per_epoch` on (0-based `step`), with steps_per_epoch =
config.data.num_train_examples // config.batch_size, the engine's definition of an epoch (the
preset's num_train_examples is the size of its training split). Before that, the logits are
exactly MoCo v2's.

The queue is always updated with the key encoder's original normalised keys of the batch, never
the mixed ones (the official code enqueues its gathered `all_k`, not `k_mix`).

Randomness comes from the `rng` argument of `loss` only: it is split into two as in MoCo v2 (the
second half shuffles the key batch in shuffle-BN mode, exactly as there), and the FT draws come
from `jax.random.fold_in(rng, FT_RNG_STREAM)`, a stream independent of both halves.

Visualisation signal (the paper's pos/neg score distributions; official `_compute_logit` with
`--save_score`): every step, the mean and variance of the positive scores q.k (one per sample,
over the batch) and of the negative scores q.n (over all batch x queue pairs), before the
transform (original q, k, queue) and after it (q', k', queue' as the loss sees them). The
official code keeps the per-query mean and variance over the queue and averages them offline;
pooling all N x K pairs differs only by the spread of the per-query means. Variances are
population variances. `python main.py --mode=plot` draws them (ssl_jax/plots/
feature_transform_scores.py).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import losses
from ssl_jax.objectives.base import LossInputs, LossOutput, PyTree
from ssl_jax.objectives.moco_v2 import MocoV2, gather_rows

DISTRIBUTIONS = ("beta", "uniform")
POSITIVE_MODES = ("extrapolate", "interpolate")
PER_DIMENSION_CHOICES = ("none", "positive", "negative", "both")
RENORMALIZE_CHOICES = ("none", "positive", "negative", "both")

# fold_in constant for the FT draws: keeps them independent of MoCo v2's split of the same rng.
FT_RNG_STREAM = 0x46545F

SCORE_STATISTICS = ("pos_mean", "pos_var", "neg_mean", "neg_var")
# e.g. 'ft_pos_mean_before', 'ft_neg_var_after'; 'ft_active' is 1 on steps where FT mixed.
FT_METRICS = tuple(f"ft_{name}_{when}" for when in ("before", "after")
                   for name in SCORE_STATISTICS) + ("ft_active",)


class TransformDraws(NamedTuple):
  """One step's random FT coefficients."""

  positive_weight: jax.Array     # lambda: () or (N, d)
  negative_weight: jax.Array     # mu: () or (K, d)
  queue_permutation: jax.Array   # (K,) partner of each queue row


def extrapolate_positives(queries: jax.Array, keys: jax.Array,
                          weight: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(q', k') = (w q + (1 - w) k, w k + (1 - w) q), both from the original pair; `weight` is a
  scalar or broadcasts against (N, d)."""
  return (weight * queries + (1.0 - weight) * keys,
          weight * keys + (1.0 - weight) * queries)


def interpolate_negatives(queue: jax.Array, weight: jax.Array,
                          permutation: jax.Array) -> jax.Array:
  """n' = w n + (1 - w) n[perm] for every queue row n; `weight` is a scalar or (K, d)."""
  return weight * queue + (1.0 - weight) * gather_rows(queue, permutation)


def pair_scores(queries: jax.Array, keys: jax.Array,
                queue: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(positive scores q_i.k_i (N,), negative scores q_i.n_j (N, K)) of the vectors as given (no
  normalisation here: after FT they need not be unit norm)."""
  return jnp.sum(queries * keys, axis=-1), queries @ queue.T


def info_nce_from_scores(positive: jax.Array, negatives: jax.Array,
                         temperature: float) -> tuple[jax.Array, jax.Array]:
  """MoCo's cross-entropy with the positive at logit 0: (mean loss, top-1 accuracy)."""
  logits = jnp.concatenate([positive[:, None], negatives], axis=1) / temperature
  labels = jnp.zeros(logits.shape[0], jnp.int32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  accuracy = jnp.mean((jnp.argmax(logits, axis=1) == 0).astype(jnp.float32))
  return loss, accuracy


def score_statistics(positive: jax.Array, negatives: jax.Array) -> dict[str, jax.Array]:
  """Mean and population variance of the positive scores (over the batch) and of the negative
  scores (over all batch x queue pairs), without gradient."""
  positive, negatives = jax.lax.stop_gradient((positive, negatives))
  return {"pos_mean": jnp.mean(positive), "pos_var": jnp.var(positive),
          "neg_mean": jnp.mean(negatives), "neg_var": jnp.var(negatives)}


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
  if value not in allowed:
    raise ValueError(f"MoCo FT {name} {value!r} is not allowed; choose one of {list(allowed)}")
  return value


class MocoFT(MocoV2):
  """MoCo v2 with positive extrapolation and negative interpolation (see the module docstring)."""

  metric_names = MocoV2.metric_names + FT_METRICS

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    if self.symmetric:
      raise ValueError("MoCo FT follows the official asymmetric MoCo (q from view 1, k from "
                       "view 2): objective_config.symmetric must be False")
    ft = config.objective_config
    self.positive_transform = bool(ft.positive_transform)
    self.negative_transform = bool(ft.negative_transform)
    self.positive_mode = _check_choice("positive_mode", ft.positive_mode, POSITIVE_MODES)
    self.distribution = _check_choice("distribution", ft.distribution, DISTRIBUTIONS)
    self.per_dimension = _check_choice("per_dimension", ft.per_dimension, PER_DIMENSION_CHOICES)
    self.renormalize = _check_choice("renormalize", ft.renormalize, RENORMALIZE_CHOICES)
    self.positive_alpha = float(ft.positive_alpha)
    self.negative_alpha = float(ft.negative_alpha)
    if self.distribution == "beta" and min(self.positive_alpha, self.negative_alpha) <= 0:
      raise ValueError(f"MoCo FT Beta parameters must be > 0, got positive_alpha="
                       f"{self.positive_alpha}, negative_alpha={self.negative_alpha}")
    self.stop_gradient_mixed_keys = bool(ft.stop_gradient_mixed_keys)
    start_epoch = int(ft.start_epoch)
    if start_epoch < 0:
      raise ValueError(f"MoCo FT start_epoch must be >= 0, got {start_epoch}")
    # Only read the data config when needed, so objectives built from partial configs (tests)
    # work with the default start.
    self.start_step = (start_epoch * (int(config.data.num_train_examples)
                                      // int(config.batch_size)) if start_epoch else 0)

  def draw_transform(self, rng: jax.Array, num_queries: int, feature_dim: int) -> TransformDraws:
    """The FT coefficients `loss(..., rng, ...)` uses (drawn from rng's FT stream)."""
    ft_rng = jax.random.fold_in(rng, FT_RNG_STREAM)
    positive_rng, negative_rng, permutation_rng = jax.random.split(ft_rng, 3)
    per_entry = {"positive": self.per_dimension in ("positive", "both"),
                 "negative": self.per_dimension in ("negative", "both")}

    def draw(key, alpha, shape):
      if self.distribution == "uniform":
        return jax.random.uniform(key, shape, jnp.float32)
      return jax.random.beta(key, alpha, alpha, shape, jnp.float32)

    positive_weight = draw(positive_rng, self.positive_alpha,
                           (num_queries, feature_dim) if per_entry["positive"] else ())
    if self.positive_mode == "extrapolate":
      positive_weight = positive_weight + 1.0
    negative_weight = draw(negative_rng, self.negative_alpha,
                           (self.queue_size, feature_dim) if per_entry["negative"] else ())
    queue_permutation = jax.random.permutation(permutation_rng, self.queue_size)
    return TransformDraws(positive_weight, negative_weight, queue_permutation)

  def transform(self, queries: jax.Array, keys: jax.Array, queue: jax.Array,
                draws: TransformDraws) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(q', k', queue') from unit-norm q, k and queue, with the configured parts switched on."""
    if self.positive_transform:
      queries, keys = extrapolate_positives(queries, keys, draws.positive_weight)
      if self.renormalize in ("positive", "both"):
        queries, keys = losses.l2_normalize(queries), losses.l2_normalize(keys)
    if self.negative_transform:
      queue = interpolate_negatives(queue, draws.negative_weight, draws.queue_permutation)
      if self.renormalize in ("negative", "both"):
        queue = losses.l2_normalize(queue)
    if self.stop_gradient_mixed_keys:
      keys = jax.lax.stop_gradient(keys)
    return queries, keys, queue

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    views, rng = inputs.views, inputs.rng
    if len(views) < 2:
      raise ValueError(f"MoCo needs 2 views per image, got {len(views)}")
    view_1, view_2 = views[0], views[1]
    # The same split as MoCo v2: the second half shuffles view 2's key batch.
    _, shuffle_rng_2 = jax.random.split(rng)
    projections, batch_stats = self._encode_queries(inputs.params, inputs.batch_stats, view_1)
    keys, target_batch_stats = self.encode_keys(inputs.target_params, inputs.target_batch_stats,
                                                view_2, shuffle_rng_2)
    queries = losses.l2_normalize(projections)
    queue = jax.lax.stop_gradient(inputs.objective_state["queue"].astype(jnp.float32))

    draws = self.draw_transform(rng, queries.shape[0], queries.shape[1])
    mixed_queries, mixed_keys, mixed_queue = self.transform(queries, keys, queue, draws)
    active = (jnp.asarray(inputs.step) >= self.start_step) & (self.positive_transform
                                                        or self.negative_transform)
    if self.start_step > 0:
      mixed_queries, mixed_keys, mixed_queue = (
          jnp.where(active, mixed, original) for mixed, original in
          ((mixed_queries, queries), (mixed_keys, keys), (mixed_queue, queue)))

    positive, negatives = pair_scores(mixed_queries, mixed_keys, mixed_queue)
    loss, accuracy = info_nce_from_scores(positive, negatives, self.temperature)
    before = score_statistics(*pair_scores(queries, keys, queue))
    after = score_statistics(positive, negatives)
    metrics = {"contrastive_acc": accuracy,
               "ft_active": active.astype(jnp.float32)}
    metrics.update({f"ft_{name}_before": value for name, value in before.items()})
    metrics.update({f"ft_{name}_after": value for name, value in after.items()})

    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats=target_batch_stats,
        projections=projections.astype(jnp.float32),
        extras={"keys": keys},   # the original keys: FT never enqueues mixed ones
        metrics=metrics,
    )
