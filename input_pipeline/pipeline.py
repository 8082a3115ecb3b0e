"""grain pipelines: the infinite two-view training stream and finite, ordered evaluation batches.

Training:

  source -> shuffle (reshuffled every epoch) -> repeat forever
    -> two independently cropped/flipped views per image -> blocks of B_local (uint8)
    -> every process_count-th block, starting at process_index -> iterator

One global stream is defined for the whole job, and global batch `s` is its blocks
s*P .. s*P + P-1, block p read (decoded, cropped) by process p alone. So each process reads only
its own examples, no example is in two processes' batches, and the global batch of every step is
the same whatever the number of processes: an 8-device run on 2 processes trains exactly like
one on a single process.

Everything up to the iterator is a `grain.MapDataset`, i.e. indexable: the element at stream
position `p` is a pure function of (seed, p). Hence the iterator's state is just a position (plus
worker bookkeeping with `mp_prefetch`), it is JSON-serialisable, and a restored iterator
continues bitwise identically to an uninterrupted one.

Evaluation reads a split once, in order; a cap (`max_examples`) keeps a seeded, stratified subset
of it rather than its first examples (`eval_subset.py` says why), and `eval_subset(...)` tells
the caller what was kept.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from absl import flags
import grain
import ml_collections
import numpy as np

from input_pipeline import eval_subset as eval_subset_lib
from input_pipeline import host_augment
from input_pipeline import sources

# Each element after batching is a whole batch, so a small buffer already hides the latency; the
# grain defaults (500 elements) would hold hundreds of batches of images in memory.
_TRAIN_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)
_EVAL_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)


def train_dataset_size(config: ml_collections.ConfigDict) -> int:
  """Number of examples in the training split (one epoch over all processes)."""
  return len(sources.make_source(config.data, config.data.train_split))


def _pipeline_seed(seed: int) -> int:
  """The 32-bit seed of the stream (shuffle and crops), shared by all processes: they read
  different positions of one stream, so they never share crop parameters."""
  # The trailing 0 keeps the streams of runs from before multi-process support unchanged.
  return int(np.random.SeedSequence([seed, 0]).generate_state(1)[0])


def build_train_dataset(config: ml_collections.ConfigDict, global_batch_size: int,
                        process_index: int = 0, process_count: int = 1, seed: int | None = None,
                        *, source: sources.RandomAccessSource | None = None
                        ) -> grain.IterDataset:
  """The infinite training stream of this process: {'view1', 'view2'}, uint8 (B_local, H, W, 3).

  Args:
    config: the experiment config (`config.data`, `config.augment` are read).
    global_batch_size: batch over all processes; each process yields
      global_batch_size // process_count examples per batch.
    process_index, process_count: this process's shard (jax.process_index(), jax.process_count()).
    seed: pipeline seed (shuffle order and crops); defaults to config.data.shuffle_seed.
    source: overrides the source the config names (e.g. an `ArraySource` of in-memory data).

  Process p yields block p of every global batch (see the module docstring), so the processes'
  batches are disjoint and together are exactly the single-process global batch. Call `iter()`
  on the result and checkpoint `iterator.get_state()`.
  """
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} must be a positive multiple of the "
                     f"process count {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
  local_batch_size = global_batch_size // process_count
  if source is None:
    source = sources.make_source(config.data, config.data.train_split)
  if len(source) < global_batch_size:
    raise ValueError(f"the {len(source)} training examples are fewer than the global batch of "
                     f"{global_batch_size}")
  seed = config.data.shuffle_seed if seed is None else seed

  dataset = grain.MapDataset.source(source)
  # ds.seed derives distinct seeds for shuffle and random_map from one pipeline seed.
  dataset = dataset.seed(_pipeline_seed(seed))
  # Shuffle before repeat: a MapDataset shuffle indexed past its length reshuffles each epoch with
  # a seed folded with the epoch number, and repeat() only extends the length.
  dataset = dataset.shuffle()
  dataset = dataset.repeat(None)
  # After repeat, so the crop generator is keyed by the global stream position: epoch 2 sees new
  # crops of the same images.
  dataset = dataset.random_map(host_augment.TwoViewCrop.from_config(config))
  dataset = dataset.batch(local_batch_size, drop_remainder=True)
  # Lazy: only this process's blocks are ever read (decoded and cropped).
  dataset = dataset[process_index::process_count]
  iter_dataset = dataset.to_iter_dataset(_TRAIN_READ_OPTIONS)
  if config.data.num_workers > 0:
    # grain's worker processes read absl flags (--grain_*); outside an absl app (tests, notebooks)
    # nothing has parsed them, so accept their defaults rather than fail on first access.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  return iter_dataset


def eval_subset(config: ml_collections.ConfigDict, split: str, max_examples: int = -1, *,
                source: sources.RandomAccessSource | None = None) -> eval_subset_lib.EvalSubset:
  """The examples of `split` that `eval_batches(config, split, _, max_examples)` reads: all of
  them (max_examples < 0 or >= the split's size), or a subset drawn by `eval_subset.choose`
  (stratified by class where the source lists its labels). Its `description`, e.g. "capped:
  10,000 of 50,000, stratified", is what a results table should print beside the figures."""
  if source is None:
    source = sources.make_source(config.data, split)
  labels = (eval_subset_lib.source_labels(source)
            if 0 <= max_examples < len(source) else None)
  return eval_subset_lib.choose(labels, len(source), max_examples,
                                split_seed=config.data.split_seed, split=split)


class _SubsetSource:
  """The elements `indices` of `source`, in that order."""

  def __init__(self, source: sources.RandomAccessSource, indices: np.ndarray):
    self._source = source
    self._indices = indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._source[int(self._indices[index])]


_LOGGED_CAPS: set[tuple[str, str, str]] = set()


def eval_batches(config: ml_collections.ConfigDict, split: str, batch_size: int,
                 max_examples: int = -1, *, source: sources.RandomAccessSource | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass over `split`: {'image': uint8 (b, H, W, 3), 'label': int32 (b,)}.

  The last batch may be smaller than batch_size; max_examples >= 0 caps the split at that many
  examples, a seeded subset stratified by class where possible (see `eval_subset`; -1: all).
  `source` overrides the source the config names.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if source is None:
    source = sources.make_source(config.data, split)
  subset = eval_subset(config, split, max_examples, source=source)
  if subset.capped:
    source = _SubsetSource(source, subset.indices)
    key = (config.data.name, split, subset.description)
    if key not in _LOGGED_CAPS:   # once: a run evaluates each split several times
      _LOGGED_CAPS.add(key)
      logging.info("evaluating %s split %r on a subset (%s)", config.data.name, split,
                   subset.description)
  dataset = grain.MapDataset.source(source)
  dataset = dataset.map(host_augment.EvalResize(config.data.image_size))
  dataset = dataset.batch(batch_size, drop_remainder=False)
  iterator = iter(dataset.to_iter_dataset(_EVAL_READ_OPTIONS))
  try:
    yield from iterator
  finally:
    iterator.close()
