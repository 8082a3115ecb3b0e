"""Independent NumPy implementations that tests compare the library's results with."""

import numpy as np


def weighted_knn_predictions(train, train_labels, test, k, temperature, num_classes):
  """Wu et al.'s weighted kNN, one test row at a time: cosine similarity, the k nearest training
  rows vote with weight exp(similarity / temperature)."""
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  test = test / np.linalg.norm(test, axis=1, keepdims=True)
  predictions = []
  for row in test:
    similarity = train @ row
    nearest = np.argsort(-similarity, kind="stable")[:k]
    votes = np.zeros(num_classes)
    for index in nearest:
      votes[train_labels[index]] += np.exp(similarity[index] / temperature)
    predictions.append(np.argmax(votes))
  return np.array(predictions)
