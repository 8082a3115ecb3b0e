"""A non-finite loss or gradient changes nothing but the step and skip counters."""

import jax
import jax.numpy as jnp
import numpy as np

from engine_helpers import host_batches, small_config
from ssl_jax import sharding as sharding_lib
from ssl_jax import train


def test_nonfinite_step_leaves_params_target_queue_and_bn_untouched():
  config = small_config("moco_v2")
  experiment = train.Experiment(config)
  state, shardings = experiment.initial_state()
  step = experiment.jitted_train_step(shardings)
  batch = sharding_lib.host_batch_to_global(host_batches(config, 1)[0], experiment.mesh)
  # Poison one projector weight: the loss and every gradient become NaN.
  kernel = state.params["projector"]["output_dense"]["kernel"]
  poisoned_params = jax.tree.map(lambda x: x, state.params)
  poisoned_params["projector"]["output_dense"]["kernel"] = kernel.at[0, 0].set(jnp.nan)
  poisoned = state.replace(params=poisoned_params)
  before = jax.device_get(poisoned)
  state = jax.device_get(state)   # the device copy is donated with `poisoned` below

  after, metrics = step(poisoned, batch)
  after = jax.device_get(after)
  assert float(metrics.compute()["skipped_step"]) == 1.0
  assert int(after.step) == 1 and int(after.nonfinite_steps) == 1
  for name in ("params", "batch_stats", "target_params", "target_batch_stats", "opt_state",
               "objective_state"):
    for old, new in zip(jax.tree.leaves(getattr(before, name)), jax.tree.leaves(getattr(after, name))):
      np.testing.assert_array_equal(np.asarray(old), np.asarray(new), err_msg=name)

  # From the skipped state with the poison removed, a finite step trains and resets the counter.
  cured = jax.device_put(after.replace(params=jax.device_get(state.params)), shardings)
  healthy, metrics = step(cured, batch)
  assert float(metrics.compute()["skipped_step"]) == 0.0
  assert int(jax.device_get(healthy.nonfinite_steps)) == 0
  assert int(jax.device_get(healthy.step)) == 2
