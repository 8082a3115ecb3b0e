"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018 protocol).

Cosine similarity between l2-normalised features; each of the k nearest training examples votes
for its class with weight exp(similarity / temperature); the class with the largest total wins.
For multi-label data (multi-hot label vectors) the weighted mean of the neighbours' vectors is a
score per label, ranked by AUC.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _predict_chunk(test_features, train_features, train_labels, k, temperature, num_classes):
  similarity = test_features @ train_features.T
  top_similarity, top_index = jax.lax.top_k(similarity, k)
  weights = jnp.exp(top_similarity / temperature)
  votes = jax.nn.one_hot(train_labels[top_index], num_classes) * weights[..., None]
  return jnp.argmax(votes.sum(axis=1), axis=-1)


@functools.partial(jax.jit, static_argnames=("k",))
def _multilabel_chunk(test_features, train_features, train_targets, k, temperature):
  similarity = test_features @ train_features.T
  top_similarity, top_index = jax.lax.top_k(similarity, k)
  weights = jax.nn.softmax(top_similarity / temperature, axis=-1)   # exp(s/T), normalised
  return jnp.einsum("nk,nkl->nl", weights, train_targets[top_index])


def _l2_normalize(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                *, k: int, temperature: float, num_classes: int,
                chunk_size: int = 1024) -> np.ndarray:
  """Predicted class of every test row."""
  k = min(k, train_features.shape[0])
  train = jnp.asarray(_l2_normalize(train_features))
  labels = jnp.asarray(train_labels)
  test = _l2_normalize(test_features)
  predictions = [
      np.asarray(_predict_chunk(jnp.asarray(test[start:start + chunk_size]), train, labels, k,
                                temperature, num_classes))
      for start in range(0, test.shape[0], chunk_size)]
  return np.concatenate(predictions)


def knn_top1(train_features, train_labels, test_features, test_labels, *, k: int,
             temperature: float, num_classes: int) -> float:
  predictions = knn_predict(train_features, train_labels, test_features, k=k,
                            temperature=temperature, num_classes=num_classes)
  return float(np.mean(predictions == np.asarray(test_labels)))


def knn_multilabel_scores(train_features: np.ndarray, train_targets: np.ndarray,
                          test_features: np.ndarray, *, k: int, temperature: float,
                          chunk_size: int = 1024) -> np.ndarray:
  """(N_test, labels) scores: the exp(similarity / T)-weighted mean of the k nearest training
  rows' 0/1 label vectors."""
  k = min(k, train_features.shape[0])
  train = jnp.asarray(_l2_normalize(train_features))
  targets = jnp.asarray(train_targets, jnp.float32)
  test = _l2_normalize(test_features)
  return np.concatenate([
      np.asarray(_multilabel_chunk(jnp.asarray(test[start:start + chunk_size]), train, targets, k,
                                   temperature))
      for start in range(0, test.shape[0], chunk_size)])
