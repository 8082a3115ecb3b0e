"""Recomputed BatchNorm statistics equal the statistics of the data, layer by layer."""

import jax
import numpy as np

from engine_helpers import small_config
from input_pipeline import device_augment
from input_pipeline import pipeline as input_pipeline
from ssl_jax import train
from ssl_jax.evaluation import bn_calibration


def test_stem_statistics_are_the_mean_and_variance_of_the_stem_outputs():
  config = small_config("byol")
  experiment = train.Experiment(config)
  state, _ = experiment.initial_state()
  encoder = experiment.encoder(*jax.device_get((state.params, state.batch_stats)))
  batch_size, max_examples = 128, 512
  calibrated = bn_calibration.recompute_batch_stats(encoder, config, batch_size=batch_size,
                                                    max_examples=max_examples)

  # Independently: the stem conv's outputs (before its BN) on the same clean images.
  means, variances = [], []
  for batch in input_pipeline.eval_batches(config, config.data.train_split, batch_size,
                                           max_examples):
    inputs = device_augment.normalize(batch["image"], config.data.mean, config.data.std)
    _, intermediates = encoder.module.apply(
        encoder.variables, inputs, train=False, capture_intermediates=lambda m, _: m.name == "stem_conv",
        mutable=["intermediates"])
    outputs = np.asarray(intermediates["intermediates"]["stem_conv"]["__call__"][0], np.float64)
    flat = outputs.reshape(-1, outputs.shape[-1])
    means.append(flat.mean(0))
    variances.append(flat.var(0, ddof=1))
  stem = calibrated.variables["batch_stats"]["stem_bn"]
  np.testing.assert_allclose(stem["mean"], np.mean(means, 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stem["var"], np.mean(variances, 0), rtol=1e-4, atol=1e-5)
  # The initial statistics were the identity (0, 1); the data's are not.
  assert not np.allclose(stem["var"], 1.0, atol=1e-2)
  # Weights are untouched.
  for a, b in zip(jax.tree.leaves(encoder.variables["params"]),
                  jax.tree.leaves(calibrated.variables["params"])):
    np.testing.assert_array_equal(a, b)
