"""Resuming the train stream mid-epoch with grain worker processes: no example skipped or repeated.

The source's images hold their own index in their pixels (constant images, so crops cannot hide
it), so every batch says exactly which examples it carries.
"""

from __future__ import annotations

import collections
import json

import numpy as np

from configs import common
from input_pipeline import pipeline
from input_pipeline import sources

NUM_EXAMPLES = 60
BATCH_SIZE = 6            # 10 batches per epoch
NUM_WORKERS = 2


def index_source(num_examples: int) -> sources.ArraySource:
  indices = np.arange(num_examples)
  pixels = np.stack([indices // 256, indices % 256, np.full_like(indices, 7)], axis=-1)
  images = np.broadcast_to(pixels[:, None, None, :], (num_examples, 8, 8, 3))
  return sources.ArraySource(images.astype(np.uint8), indices % 10)


def example_ids(views: np.ndarray) -> np.ndarray:
  pixels = views[:, 0, 0].astype(np.int64)
  return pixels[:, 0] * 256 + pixels[:, 1]


def stream_config(num_workers: int):
  config = common.base_config("test", "digits")
  config.data.image_size = 8
  config.data.num_workers = num_workers
  config.augment.crop_scale = (0.3, 1.0)   # real random crops, so the crop stream is checked too
  config.augment.flip = True
  return config


def take_ids(iterator, num_batches: int) -> tuple[list[np.ndarray], list[dict]]:
  batches = [next(iterator) for _ in range(num_batches)]
  return [example_ids(batch["view1"]) for batch in batches], batches


def test_resume_mid_epoch_with_worker_processes_neither_skips_nor_repeats():
  source = index_source(NUM_EXAMPLES)
  before, after = 4, 9   # interrupted after 4 batches; 9 more run into the second epoch

  iterator = iter(pipeline.build_train_dataset(stream_config(NUM_WORKERS), BATCH_SIZE,
                                               source=source))
  try:
    first_ids, _ = take_ids(iterator, before)
    # The checkpoint's copy of the state goes through JSON, as orbax stores it.
    saved_state = json.loads(json.dumps(iterator.get_state()))
    continued_ids, continued = take_ids(iterator, after)
  finally:
    iterator.close()

  restored = iter(pipeline.build_train_dataset(stream_config(NUM_WORKERS), BATCH_SIZE,
                                               source=source))
  try:
    restored.set_state(saved_state)
    restored_ids, restored_batches = take_ids(restored, after)
  finally:
    restored.close()

  # The restored stream is the uninterrupted one: same examples, same crops and flips.
  for expected, actual in zip(continued, restored_batches):
    np.testing.assert_array_equal(expected["view1"], actual["view1"])
    np.testing.assert_array_equal(expected["view2"], actual["view2"])

  # Epoch 1 = the batches before the interruption plus the first ones after the restore: every
  # example exactly once.
  batches_per_epoch = NUM_EXAMPLES // BATCH_SIZE
  epoch_one = np.concatenate(first_ids + restored_ids[:batches_per_epoch - before])
  counts = collections.Counter(epoch_one.tolist())
  assert sorted(counts) == list(range(NUM_EXAMPLES))
  assert set(counts.values()) == {1}
  # The rest begins epoch 2 with a new order of the same examples.
  epoch_two_start = np.concatenate(restored_ids[batches_per_epoch - before:])
  assert len(set(epoch_two_start.tolist())) == len(epoch_two_start)

  # And it is the stream a single process produces: workers change neither order nor crops.
  in_process = iter(pipeline.build_train_dataset(stream_config(0), BATCH_SIZE, source=source))
  reference_ids, reference = take_ids(in_process, before + after)
  np.testing.assert_array_equal(np.concatenate(reference_ids),
                                np.concatenate(first_ids + restored_ids))
  np.testing.assert_array_equal(reference[-1]["view2"], restored_batches[-1]["view2"])
