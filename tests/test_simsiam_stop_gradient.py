"""The learning invariant of SimSiam's stop-gradient (Chen & He 2021, section 4.1, figure 2):
without it the representation collapses, with it it does not.

Both variants train for 40 steps on digits through the engine's train step (ResNet-10 of width 8,
batch 64: the tiny digits preset of configs/simsiam.py, with no warm-up and a constant learning
rate of half the preset's peak; at the full peak the stop-gradient run also loses much of its rank
this early, 9 against 2, at half of it 25 against 2.5). The effective rank (RankMe) and the std of
the l2-normalised projections (ssl_jax/collapse.py) of one fixed batch then tell them apart. The
two programs differ, so this costs two compilations: XLA's optimisation level 1 keeps each in the
tens of seconds while the steps stay fast.
"""

from __future__ import annotations

import functools
import importlib

import jax
import numpy as np

from ssl_jax import collapse, train
from ssl_jax import step as step_lib

STEPS = 40
BASE_LR = 0.5
level_1_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 1})


def train_simsiam(stop_gradient: bool):
  config = importlib.import_module("configs.simsiam").get_config("digits,tiny")
  config.objective_config.stop_gradient = stop_gradient
  config.num_steps = STEPS
  config.optim.update(dict(warmup_epochs=0.0, schedule="constant", base_lr=BASE_LR))
  config.eval.at_end = False
  experiment = train.Experiment(config, devices=jax.devices()[:1])
  assert (config.model.name, config.model.width, config.batch_size) == ("resnet10", 8, 64)
  state, _ = experiment.initial_state()
  train_step, _ = step_lib.make_train_step(
      experiment.objective, experiment.optimizer, experiment.lr_schedule,
      experiment.tau_schedule, config.augment, tuple(config.data.mean), tuple(config.data.std),
      experiment.step_rng)
  step = level_1_jit(train_step)
  batches = iter(experiment.train_dataset())
  fixed_batch = None
  for _ in range(STEPS):
    batch = next(batches)
    fixed_batch = batch if fixed_batch is None else fixed_batch
    state, _ = step(state, batch)
  # The fixed batch: the first batch's first crops, normalised but not colour-augmented.
  images = ((fixed_batch["view1"].astype(np.float32) / 255.0 - np.asarray(config.data.mean))
            / np.asarray(config.data.std)).astype(np.float32)

  @level_1_jit
  def projection_monitors(params, batch_stats):
    outputs, _ = experiment.objective.network.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"])
    return collapse.rankme(outputs["projection"]), collapse.normalized_std(outputs["projection"])

  rank, std = projection_monitors(state.params, state.batch_stats)
  return float(rank), float(std)


def test_simsiam_without_stop_gradient_collapses():
  rank_with, std_with = train_simsiam(stop_gradient=True)
  rank_without, std_without = train_simsiam(stop_gradient=False)
  # With the stop-gradient the 64-d projections keep an effective rank of ~25 (our runs); without
  # it they fall to ~2.5, and spread out less.
  assert rank_with > 12.0, rank_with
  assert rank_without < 0.25 * rank_with, (rank_without, rank_with)
  assert std_without < std_with, (std_without, std_with)
