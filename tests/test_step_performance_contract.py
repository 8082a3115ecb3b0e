"""The step's performance contract: compiled once, and no host transfer inside the loop.

Speed itself is measured in benchmarks/, not here; these tests guard the two regressions that
silently cost the most: a step that retraces (a Python value or a shape changing per step) and
a step that moves data between host and device on its own.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from engine_helpers import host_batches, small_config
from ssl_jax import sharding as sharding_lib
from ssl_jax import train

NUM_STEPS = 5


def test_step_traces_and_compiles_once_then_runs_without_host_transfers():
  # MoCo v2 has the most per-step state besides the model: the queue and its pointer.
  config = small_config("moco_v2")
  experiment = train.Experiment(config)
  traces = []
  loss = experiment.objective.loss

  def counting_loss(*args, **kwargs):
    traces.append(1)   # runs only while tracing
    return loss(*args, **kwargs)

  experiment.objective.loss = counting_loss
  state, shardings = experiment.initial_state()
  step = experiment.jitted_train_step(shardings)
  batches = [sharding_lib.host_batch_to_global(batch, experiment.mesh)
             for batch in host_batches(config, NUM_STEPS)]
  jax.block_until_ready(batches)

  state, _ = step(state, batches[0])
  # Every later step reuses the compiled program and neither sends nor fetches anything:
  # the guard raises on any implicit host<->device transfer.
  with jax.transfer_guard("disallow"):
    for batch in batches[1:]:
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))

  assert len(traces) == 1
  assert step._cache_size() == 1
  assert int(jax.device_get(state.step)) == NUM_STEPS


def test_transfer_guard_catches_a_host_batch():
  """The guard above is not vacuous: feeding a NumPy batch is an implicit transfer it rejects."""
  config = small_config("moco_v2")
  experiment = train.Experiment(config)
  state, shardings = experiment.initial_state()
  step = experiment.jitted_train_step(shardings)
  (host_batch,) = host_batches(config, 1)
  with jax.transfer_guard("disallow"), pytest.raises(Exception, match="[Dd]isallowed"):
    step(state, {name: np.asarray(value) for name, value in host_batch.items()})

