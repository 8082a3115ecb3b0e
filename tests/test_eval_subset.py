"""Evaluation caps (`max_examples`): a seeded subset stratified by class, the same in every run
and process, that says what it kept; not the first N examples of a split listed class by class."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np

from input_pipeline import eval_subset
from input_pipeline import pipeline
from input_pipeline import sources
import dataset_files

CLASS_SIZES = {"ant": 6, "bee": 12, "cat": 18, "dog": 24}   # listed class by class: 60 files


def folder_config(root, **overrides):
  config = importlib.import_module("configs.moco_v2").get_config("folder,tiny")
  config.data.root = str(root)
  config.data.image_size = 8
  config.data.update(overrides)
  return config


def write_folder(root) -> None:
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    for name, count in CLASS_SIZES.items():
      for k in range(count):
        dataset_files.write_image(os.path.join(root, split, name, f"{k:03d}.png"),
                                  dataset_files.random_image(rng, 8))


def read(config, split, max_examples):
  batches = list(pipeline.eval_batches(config, split, 16, max_examples))
  return (np.concatenate([b["image"] for b in batches]),
          np.concatenate([b["label"] for b in batches]))


def test_cap_on_a_folder_keeps_every_class_in_proportion_and_is_seeded(tmp_path):
  write_folder(tmp_path)
  config = folder_config(tmp_path)
  source = sources.make_source(config.data, "train")
  # The files are listed class by class: the first 30 would be 6 ants, 12 bees, 12 cats, 0 dogs.
  assert np.bincount(source.labels[:30]).tolist() == [6, 12, 12]

  images, labels = read(config, "train", 30)
  assert np.bincount(labels).tolist() == [3, 6, 9, 12]   # half of each class
  subset = pipeline.eval_subset(config, "train", 30)
  assert (subset.num_kept, subset.num_total, subset.method) == (30, 60, "stratified")
  assert subset.capped and subset.description == "capped: 30 of 60, stratified"
  # What was read is the subset, in the split's order.
  assert np.all(np.diff(subset.indices) > 0)
  np.testing.assert_array_equal(labels, source.labels[subset.indices])
  np.testing.assert_array_equal(images[7], source[int(subset.indices[7])]["image"])

  # Same seed: the same examples; another data.split_seed: others, still in proportion.
  again_images, again_labels = read(config, "train", 30)
  np.testing.assert_array_equal(again_images, images)
  np.testing.assert_array_equal(again_labels, labels)
  other = pipeline.eval_subset(folder_config(tmp_path, split_seed=1), "train", 30)
  assert not np.array_equal(other.indices, subset.indices)
  assert np.bincount(source.labels[other.indices]).tolist() == [3, 6, 9, 12]
  # Each split draws its own subset.
  assert not np.array_equal(pipeline.eval_subset(config, "val", 30).indices, subset.indices)

  # A cap that rounds: 10 of 60 keeps 1, 2, 3, 4.
  assert np.bincount(read(config, "train", 10)[1]).tolist() == [1, 2, 3, 4]


def test_no_cap_or_a_cap_above_the_split_reads_everything_in_order(tmp_path):
  write_folder(tmp_path)
  config = folder_config(tmp_path)
  source = sources.make_source(config.data, "val")
  for max_examples in (-1, 60, 1000):
    subset = pipeline.eval_subset(config, "val", max_examples)
    assert not subset.capped and subset.description == "all 60"
    np.testing.assert_array_equal(read(config, "val", max_examples)[1], source.labels)


def test_largest_remainder_counts_add_up_exactly():
  assert eval_subset.stratified_counts([6, 12, 18, 24], 30).tolist() == [3, 6, 9, 12]
  assert eval_subset.stratified_counts([3, 3, 4], 5).tolist() == [2, 1, 2]
  assert eval_subset.stratified_counts([1, 1, 1], 2).tolist() == [1, 1, 0]
  counts = eval_subset.stratified_counts(np.arange(1, 101), 997)
  assert counts.sum() == 997 and np.all(np.abs(counts - np.arange(1, 101) * 997 / 5050) < 1)


def test_multi_label_targets_and_unlisted_labels_give_a_seeded_uniform_subset(tmp_path):
  dataset_files.medmnist_npz(str(tmp_path / "chestmnist.npz"), num_classes=14, multi_label=True,
                             split_sizes=(40, 4, 6))
  config = importlib.import_module("configs.moco_v2").get_config("chestmnist,tiny")
  config.data.root = str(tmp_path)
  subset = pipeline.eval_subset(config, "train", 10)
  assert subset.description == "capped: 10 of 40, uniform"
  np.testing.assert_array_equal(pipeline.eval_subset(config, "train", 10).indices, subset.indices)
  labels = read(config, "train", 10)[1]
  assert labels.shape == (10, 14)
  np.testing.assert_array_equal(labels, sources.make_source(config.data, "train").labels[
      subset.indices])
  # A source without a label list (TFDS, ArrayRecord) is drawn uniformly too.
  unlisted = eval_subset.choose(None, 50, 5, split_seed=0, split="train")
  assert unlisted.method == "uniform" and unlisted.num_kept == 5


def test_the_subset_is_the_same_in_another_process():
  """Seeded by (data.split_seed, split name) with a process-independent hash of the name."""
  labels = np.repeat(np.arange(7), 30)
  here = eval_subset.choose(labels, len(labels), 50, split_seed=3, split="train").indices
  # The module alone (numpy only): importing the input_pipeline package would load jax.
  code = (f"import sys; sys.path.insert(0, {os.path.dirname(eval_subset.__file__)!r}); "
          "import numpy as np, eval_subset; "
          "print(eval_subset.choose(np.repeat(np.arange(7), 30), 210, 50, split_seed=3, "
          "split='train').indices.tolist())")
  environment = dict(os.environ, PYTHONHASHSEED="12345")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, timeout=120, check=True)
  assert result.stdout.strip() == str(here.tolist())
