"""Shared helpers of the engine tests: small configs and running steps on chosen devices."""

from __future__ import annotations

import functools
import importlib
import os

import jax
import ml_collections
import numpy as np

from ssl_jax import sharding as sharding_lib
from ssl_jax import train

# For functions a test runs once on tiny inputs: compile time is all that matters, and XLA's
# optimisation level 0 compiles these ResNet graphs several times faster than the default.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def small_config(objective: str, dataset: str = "digits", **overrides) -> ml_collections.ConfigDict:
  """The objective's `<dataset>,tiny` config shrunk further, so a step compiles in seconds."""
  config = importlib.import_module(f"configs.{objective}").get_config(f"{dataset},tiny")
  config.model.name = "resnet10"
  config.model.width = 4
  config.data.image_size = 16
  config.batch_size = 32
  # The learning-rate schedule's length, fixed here rather than taken from the tiny job (which is
  # tuned for learning): 8-vs-1-device agreement after 20 steps is sensitive to the rate (see
  # test_sharded_vs_single.py), and at 200 steps' cosine MoCo v2 and SimSiam drifted to 3.6e-5
  # and 4.0e-4 on synthetic images, against under 1e-5 at 300 (measured).
  config.num_steps = 300
  config.eval.at_end = False
  # These configs run a few dozen steps, where compiling is most of the time
  # (ssl_jax/quick_compile.py).
  config.quick_compile = True
  config.log_every_steps = 5
  if "queue_size" in config.objective_config:   # the MoCo family: a queue the batch divides
    config.objective_config.queue_size = 256
  if "start_epoch" in config.objective_config:  # MoCo + FT: mix from the first of a few steps
    config.objective_config.start_epoch = 0
  return apply_overrides(config, overrides)


FORCED_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def environment_with_devices(count: int) -> dict[str, str]:
  """This session's environment (CPU flags, compilation cache) for a subprocess that sees `count`
  forced CPU devices instead of the session's 8."""
  environment = dict(os.environ)
  flags = environment.get("XLA_FLAGS", "").replace(f"{FORCED_DEVICES_FLAG}=8", "")
  environment["XLA_FLAGS"] = f"{flags} {FORCED_DEVICES_FLAG}={count}".strip()
  return environment


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """Sets each dotted field ('optim.base_lr') of `config` to its value, as --config.x=y does."""
  for dotted, value in overrides.items():
    *path, key = dotted.split(".")
    node = config
    for part in path:
      node = node[part]
    node[key] = value
  return config


def host_batches(config: ml_collections.ConfigDict, count: int) -> list[dict[str, np.ndarray]]:
  iterator = iter(train.Experiment(config).train_dataset())
  return [next(iterator) for _ in range(count)]


def run_steps(config: ml_collections.ConfigDict, batches, devices):
  """Runs one step per batch on `devices`; returns the final state on the host."""
  experiment = train.Experiment(config, devices=devices)
  state, shardings = experiment.initial_state()
  step = experiment.jitted_train_step(shardings)
  for batch in batches:
    state, _ = step(state, sharding_lib.host_batch_to_global(batch, experiment.mesh))
  return jax.device_get(state)


def max_abs_difference(tree_a, tree_b) -> float:
  differences = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64)
                                                              - np.asarray(b, np.float64)))),
                             tree_a, tree_b)
  return max(jax.tree.leaves(differences))
