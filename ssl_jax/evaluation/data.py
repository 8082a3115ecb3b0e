"""The dataset side of an evaluation: its splits, their features and images, its task.

One `EvalData` is made per evaluation run (the end of training, an online kNN, `--mode=eval`).
It reads the evaluation fields of a config (`config.data`, `config.eval`, `config.seed`) and
caches the features of each (encoder, split): kNN and the linear probe of the same encoder share
one extraction.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import ml_collections
import numpy as np
from jax.sharding import Mesh

from input_pipeline import pipeline as input_pipeline
from input_pipeline import sources
from ssl_jax.evaluation import features as features_lib


def capped_note(splits_read: dict[str, str]) -> str:
  """'' when every split was read whole, else the line a results table prints under its rows,
  naming what each split was capped to (`EvalData.splits_read`)."""
  if not any(description.startswith("capped") for description in splits_read.values()):
    return ""
  return "evaluated on " + "; ".join(f"{split}: {description}"
                                     for split, description in splits_read.items())


@dataclasses.dataclass
class EvalData:
  """Splits of `config.data`, read with `config.eval.batch_size` and `config.eval.max_examples`.

  `workdir` is where evaluators write their plots (and fine-tuned encoders); None writes none
  (the online kNN)."""

  config: ml_collections.ConfigDict
  mesh: Mesh
  workdir: str | None = None
  _cache: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def settings(self) -> ml_collections.ConfigDict:
    return self.config.eval

  @property
  def seed(self) -> int:
    return int(self.config.seed)

  @property
  def multi_label(self) -> bool:
    return self.config.data.get("label_type", "single") == "multi_label"

  @functools.cached_property
  def num_classes(self) -> int:
    """config.data.num_classes, or (when 0: 'whatever the data holds') the source's classes."""
    if self.config.data.num_classes > 0:
      return int(self.config.data.num_classes)
    classes = sources.make_source(self.config.data, self.config.data.train_split).classes
    if not classes:
      raise ValueError(f"config.data.num_classes is 0 and the {self.config.data.name} source "
                       "names no classes; set config.data.num_classes")
    return len(classes)

  def cached(self, key, compute: Callable[[], Any]):
    """compute(), once per key for the life of this evaluation run."""
    if key not in self._cache:
      self._cache[key] = compute()
    return self._cache[key]

  def features(self, encoder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features, labels) of every example of `split` (up to the cap)."""
    return self.cached((id(encoder), split, "pooled"),
                        lambda: self._extract(encoder.device_pooled, split))

  def stage_features(self, encoder, split: str, spatial_size: int
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({'stage1'..'stage4', 'pooled'[, 'stage<i>_s<size>']}, labels); see
    `features.stage_feature_fn`."""
    return self.cached(
        (id(encoder), split, f"stages_{spatial_size}"),
        lambda: self._extract(features_lib.stage_feature_fn(encoder, spatial_size), split))

  def _extract(self, apply_fn, split: str):
    batch_size = features_lib.padded_batch_size(self.settings.batch_size, self.mesh)
    batches = input_pipeline.eval_batches(self.config, split, batch_size,
                                          self.settings.max_examples)
    return features_lib.extract_features(apply_fn, batches, self.mesh, batch_size)

  def images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All (uint8 images, labels) of `split` in host memory (up to the cap)."""
    batches = list(input_pipeline.eval_batches(self.config, split, self.settings.batch_size,
                                               self.settings.max_examples))
    if not batches:
      raise ValueError(f"the {split!r} split has no examples")
    return (np.concatenate([b["image"] for b in batches]),
            np.concatenate([b["label"] for b in batches]).astype(np.int32))

  def sample_images(self, split: str, count: int) -> np.ndarray:
    """The first `count` images of `split` as floats in [0, 1]."""
    batches = input_pipeline.eval_batches(self.config, split, count, count)
    return np.asarray(next(iter(batches))["image"], np.float32) / 255.0

  def splits_read(self) -> dict[str, str]:
    """{split: what the evaluation reads of it}, e.g. {'train': 'capped: 2,048 of 50,000,
    stratified', 'test': 'all 10,000'}, for the train and test splits."""
    data = self.config.data
    return {split: self.cached(("subset", split), lambda split=split: input_pipeline.eval_subset(
                self.config, split, self.settings.max_examples).description)
            for split in dict.fromkeys((data.train_split, data.test_split))}

  @property
  def figure_source(self) -> str:
    """What a figure of this evaluation names as its source: the config and the dataset."""
    return f"{self.config.name} on {self.config.data.name}"

  def output_path(self, filename: str) -> str | None:
    """Where to write an output (a plot, an exported encoder), or None when this evaluation
    writes no files."""
    return None if self.workdir is None else os.path.join(self.workdir, filename)
