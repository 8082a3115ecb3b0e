"""DevicePrefetchIterator: the same batches in the same order, transferred ahead, and a state that
resumes at the first batch not yet handed out (prefetched batches are not skipped)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from configs import common
from input_pipeline import device_prefetch
from input_pipeline import pipeline
from ssl_jax import sharding as sharding_lib

BATCH_SIZE = 16


def train_iterator():
  config = common.base_config("test", "digits")
  return iter(pipeline.build_train_dataset(config, BATCH_SIZE))


def data_mesh():
  return sharding_lib.make_mesh(common.base_config("test", "digits").mesh)


def test_prefetched_batches_are_identical_in_order_and_resume_exactly():
  expected = [next(iterator) for iterator in [train_iterator()] for _ in range(7)]
  mesh = data_mesh()
  transferred = []   # host batches put on the devices so far

  def put(batch):
    transferred.append(batch)
    return sharding_lib.host_batch_to_global(batch, mesh)

  prefetching = device_prefetch.DevicePrefetchIterator(train_iterator(), put, buffer_size=2)
  handed_out = []
  for index in range(3):
    batch = next(prefetching)
    assert isinstance(batch["view1"], jax.Array)
    # Batch `index` is handed out with batches index+1 and index+2 already transferred.
    assert len(transferred) == index + 3
    handed_out.append(batch)
  state = json.loads(json.dumps(prefetching.get_state()))   # what a checkpoint stores
  handed_out += [next(prefetching) for _ in range(4)]
  for want, got in zip(expected, handed_out):
    for name in ("view1", "view2"):
      np.testing.assert_array_equal(np.asarray(got[name]), want[name])

  # Restored from the state after 3 batches: continues with batch 3, although the prefetcher had
  # already read batches 3 and 4 from the wrapped iterator when the state was taken.
  restored_iterator = train_iterator()
  restored_iterator.set_state(state)
  np.testing.assert_array_equal(next(restored_iterator)["view1"], expected[3]["view1"])
  # set_state on the prefetcher itself drops what it had prefetched.
  prefetching.set_state(state)
  np.testing.assert_array_equal(np.asarray(next(prefetching)["view2"]), expected[3]["view2"])


def test_finite_iterators_end_and_bad_buffer_sizes_are_refused():
  class Finite:
    def __init__(self):
      self.position = 0

    def __next__(self):
      if self.position == 3:
        raise StopIteration
      self.position += 1
      return self.position

    def get_state(self):
      return {"position": self.position}

    def set_state(self, state):
      self.position = state["position"]

  prefetching = device_prefetch.DevicePrefetchIterator(Finite(), lambda value: value * 10)
  assert next(prefetching) == 10
  assert prefetching.get_state() == {"position": 1}
  assert list(prefetching) == [20, 30]
  assert prefetching.get_state() == {"position": 3}
  with pytest.raises(ValueError, match="buffer_size must be at least 1"):
    device_prefetch.DevicePrefetchIterator(Finite(), lambda value: value, buffer_size=0)
