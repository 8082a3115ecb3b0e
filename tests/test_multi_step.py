"""Several train steps per dispatch (`step.jit_multi_step`, a `lax.scan` over a buffer of batches)
compute what as many single steps compute, sharded over the 8 devices."""

import jax
import numpy as np
import pytest

from engine_helpers import host_batches, max_abs_difference, small_config
from ssl_jax import sharding as sharding_lib
from ssl_jax import step as step_lib
from ssl_jax import train

STEPS_PER_DISPATCH = 4
DISPATCHES = 2
# The loop body may be fused differently from a lone step, so the two agree to rounding, not
# bitwise: 1.5e-6 at most over MoCo v2's and SimSiam's whole states after 8 steps, on 1 and 8
# devices (measured with ReLU on an AMD EPYC; the test runs with GELU, see `smooth_activations`).
TOLERANCE = 1e-5


def test_scanned_steps_match_single_steps_on_8_devices(smooth_activations):
  # MoCo v2 carries every kind of state (EMA target, queue, BN statistics). The settings are
  # those of its 8-vs-1-device test (test_sharded_vs_single.py), so both compile the same single
  # step (with GELU for ReLU, see `smooth_activations`); without photometric augmentation, whose
  # thresholds turn last-bit differences into pixel changes.
  config = small_config("moco_v2", "synthetic", **{"objective_config.bn_mode": "global",
                                                   "optim.base_lr": 0.05,
                                                   "augment.photometric": False})
  batches = host_batches(config, STEPS_PER_DISPATCH * DISPATCHES)
  experiment = train.Experiment(config, devices=jax.devices())
  mesh = experiment.mesh

  state, shardings = experiment.initial_state()
  initial_params = jax.device_get(state.params)
  single_step = experiment.jitted_train_step(shardings)
  single_metrics = []
  for batch in batches:
    state, metrics = single_step(state, sharding_lib.host_batch_to_global(batch, mesh))
    single_metrics.append(metrics)
  single = jax.device_get(state)

  state, _ = experiment.initial_state()
  multi_step = experiment.jitted_multi_step(shardings, STEPS_PER_DISPATCH)
  for dispatch in range(DISPATCHES):
    steps = slice(dispatch * STEPS_PER_DISPATCH, (dispatch + 1) * STEPS_PER_DISPATCH)
    buffer = sharding_lib.host_batches_to_global_buffer(batches[steps], mesh)
    assert buffer["view1"].shape[:2] == (STEPS_PER_DISPATCH, config.batch_size)
    state, multi_metrics = multi_step(state, buffer)
    # Each dispatch's metrics are those of its own steps merged, as the train loop merges them.
    merged = single_metrics[steps][0]
    for metrics in single_metrics[steps][1:]:
      merged = merged.merge(metrics)
    expected, got = merged.compute(), multi_metrics.compute()
    assert set(got) == set(expected)
    for name in expected:
      np.testing.assert_allclose(float(got[name]), float(expected[name]), rtol=1e-5, atol=1e-6,
                                 err_msg=f"dispatch {dispatch}: {name}")
  multi = jax.device_get(state)

  assert int(multi.step) == int(single.step) == len(batches)
  assert max_abs_difference(multi, single) < TOLERANCE   # params, target, queue, BN, optimiser
  assert max_abs_difference(initial_params, single.params) > 100 * TOLERANCE


def test_steps_per_dispatch_must_be_positive():
  with pytest.raises(ValueError, match="steps_per_dispatch=0 must be a positive integer"):
    step_lib.jit_multi_step(train_step=None, state_shardings=None, mesh=None,
                            steps_per_dispatch=0)
