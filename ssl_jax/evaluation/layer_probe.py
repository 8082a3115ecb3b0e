"""Per-layer probing: a linear probe on each stage output, to show where useful features appear.

Each of the four stage outputs is globally average-pooled (and optionally also average-pooled
onto a fixed spatial grid, which keeps some layout) and probed exactly like the final features
(`linear_probe.linear_probe`: validation-chosen L2, refit on train + validation). The final
pooled features of a ResNet are the globally pooled stage 4, so they are not probed twice.
"""

from __future__ import annotations

import numpy as np

from ssl_jax.evaluation import linear_probe as linear_probe_lib


def layer_names(features: dict[str, np.ndarray]) -> list[str]:
  """Stage keys in network order ('stage1', 'stage1_s2', 'stage2', ...)."""
  return sorted((k for k in features if k.startswith("stage")),
                key=lambda k: (int(k[5:].split("_")[0]), k))


def probe_layers(train_features: dict[str, np.ndarray], train_labels: np.ndarray,
                 test_features: dict[str, np.ndarray], test_labels: np.ndarray, *,
                 num_classes: int, **probe_kwargs) -> dict[str, dict[str, float]]:
  """{layer: linear probe results} for every representation in the feature dicts."""
  return {name: linear_probe_lib.linear_probe(train_features[name], train_labels,
                                              test_features[name], test_labels,
                                              num_classes=num_classes, **probe_kwargs)
          for name in layer_names(train_features)}
