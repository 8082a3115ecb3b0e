"""Few-shot classification on frozen features: N-way K-shot episodes.

Each episode draws N classes, then K support and Q query examples of each (disjoint, without
replacement); a classifier built from the support set labels the queries. The default classifier
is the prototype (nearest class mean) one on l2-normalised features (Snell et al. 2017; the "L2N"
variant of SimpleShot, Wang et al. 2019); logistic regression on the support set is an option.
Accuracy is averaged over episodes and reported with the usual 95 % interval,
1.96 * std / sqrt(episodes) (Chen et al. 2019, "A closer look at few-shot classification").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.evaluation import linear_probe as linear_probe_lib

CLASSIFIERS = ("prototype", "logistic")


def sample_episodes(labels: np.ndarray, *, n_way: int, k_shot: int, n_query: int,
                    num_episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices into `labels`: support (E, N, K) and query (E, N, Q); row n of an episode holds
  one class. The same seed gives the same episodes."""
  labels = np.asarray(labels)
  needed = k_shot + n_query
  members = {cls: np.flatnonzero(labels == cls) for cls in np.unique(labels)}
  eligible = np.asarray(sorted(cls for cls, index in members.items() if len(index) >= needed))
  if len(eligible) < n_way:
    raise ValueError(
        f"{n_way}-way {k_shot}-shot episodes with {n_query} queries need {n_way} classes with "
        f"at least {needed} examples each; only {len(eligible)} classes have that many "
        f"(smallest class: {min(len(i) for i in members.values())} examples)")
  rng = np.random.default_rng(seed)
  support = np.empty((num_episodes, n_way, k_shot), np.int64)
  query = np.empty((num_episodes, n_way, n_query), np.int64)
  for episode in range(num_episodes):
    for row, cls in enumerate(rng.choice(eligible, n_way, replace=False)):
      chosen = rng.choice(members[cls], needed, replace=False)
      support[episode, row], query[episode, row] = chosen[:k_shot], chosen[k_shot:]
  return support, query


def confidence_interval95(accuracies: np.ndarray) -> float:
  """Half-width of the 95 % interval of the mean: 1.96 * std / sqrt(episodes)."""
  accuracies = np.asarray(accuracies, np.float64)
  return float(1.96 * accuracies.std() / np.sqrt(len(accuracies)))


def _l2_normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@jax.jit
def _prototype_accuracy(support, query):
  """support (E, N, K, D), query (E, N, Q, D) -> (E,) accuracy of the nearest prototype."""
  prototypes = _l2_normalize(support).mean(axis=2)                        # (E, N, D)
  queries = _l2_normalize(query)
  # Squared distance up to the query's own norm, which does not change the nearest prototype.
  distances = (jnp.sum(prototypes ** 2, axis=-1)[:, None, None, :]
               - 2.0 * jnp.einsum("enqd,emd->enqm", queries, prototypes))
  predictions = jnp.argmin(distances, axis=-1)                            # (E, N, Q)
  truth = jnp.arange(support.shape[1])[None, :, None]
  return jnp.mean(predictions == truth, axis=(1, 2))


@functools.partial(jax.jit, static_argnames=("iterations",))
def _logistic_accuracy(support, query, l2, iterations: int):
  """Multinomial logistic regression on each episode's l2-normalised support set."""
  episodes, n_way, k_shot, dim = support.shape
  targets = jnp.repeat(jnp.eye(n_way), k_shot, axis=0)

  def one_episode(support_features, query_features):
    weights = linear_probe_lib.fit_logistic(
        _l2_normalize(support_features.reshape(n_way * k_shot, dim)), targets, l2,
        iterations=iterations)
    logits = _l2_normalize(query_features) @ weights["w"] + weights["b"]
    return jnp.mean(jnp.argmax(logits, -1) == jnp.arange(n_way)[:, None])

  return jax.vmap(one_episode)(support, query)


def episode_accuracies(features: np.ndarray, support: np.ndarray, query: np.ndarray, *,
                       classifier: str = "prototype", logistic_l2: float = 1e-2,
                       logistic_iterations: int = 100, chunk: int = 100) -> np.ndarray:
  """Accuracy of every episode (index arrays from `sample_episodes`)."""
  if classifier not in CLASSIFIERS:
    raise ValueError(f"unknown few-shot classifier {classifier!r}; allowed: {list(CLASSIFIERS)}")
  features = np.asarray(features, np.float32)
  accuracies = []
  for start in range(0, len(support), chunk):   # bounds the (E, N, K, D) gathers in memory
    support_features = jnp.asarray(features[support[start:start + chunk]])
    query_features = jnp.asarray(features[query[start:start + chunk]])
    if classifier == "prototype":
      accuracies.append(_prototype_accuracy(support_features, query_features))
    else:
      accuracies.append(_logistic_accuracy(support_features, query_features,
                                           jnp.float32(logistic_l2), logistic_iterations))
  return np.concatenate([np.asarray(a) for a in accuracies])


def few_shot(features: np.ndarray, labels: np.ndarray, *, n_way: int = 5,
             shots=(1, 5, 20, 50), n_query: int = 15, num_episodes: int = 600, seed: int = 0,
             classifier: str = "prototype", logistic_l2: float = 1e-2
             ) -> dict[str, dict[str, float]]:
  """{'<N>way_<K>shot': {'mean', 'ci95', 'episodes'}} for every K in `shots`."""
  results = {}
  for k_shot in shots:
    support, query = sample_episodes(labels, n_way=n_way, k_shot=k_shot, n_query=n_query,
                                     num_episodes=num_episodes, seed=seed + k_shot)
    accuracies = episode_accuracies(features, support, query, classifier=classifier,
                                    logistic_l2=logistic_l2)
    results[f"{n_way}way_{k_shot}shot"] = {"mean": float(accuracies.mean()),
                                           "ci95": confidence_interval95(accuracies),
                                           "episodes": int(num_episodes)}
  return results
