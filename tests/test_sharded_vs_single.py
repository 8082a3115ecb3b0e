"""Data-parallel training over 8 devices computes the same thing as on 1 device."""

import jax
import pytest

from engine_helpers import host_batches, max_abs_difference, run_steps, small_config
from ssl_jax.objectives import OBJECTIVES

STEPS = 20


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_twenty_steps_on_8_devices_match_1_device(objective):
  assert jax.device_count() == 8
  config = small_config(objective, "synthetic")
  # Per-device BN is a different computation by design; global BN must agree exactly.
  overrides = {"objective_config.bn_mode": "global"} if "bn_mode" in config.objective_config else {}
  # Synthetic textured images and a moderate learning rate: on digits (mostly black 16 px
  # images) the ~1e-7 difference in reduction order between the two layouts grew to 2e-5..2e-3
  # within 20 steps even at this rate (measured), and at the digits presets' high rates to 1e-1;
  # on synthetic images it stays below 2e-6. That growth tests the conditioning of a width-4
  # network on near-empty images, not the sharding.
  overrides["optim.base_lr"] = 0.05
  # Photometric augmentation off: XLA's kernels round differently for a batch of 4 (per device)
  # than of 32, and the hue rotation's and solarize's thresholds turn those last-bit differences
  # into visible pixel changes, which BYOL then amplified to 7e-4..5e-3 in 20 steps (measured;
  # 1.2e-7 without). The augmentation's own layout independence is tested in
  # test_device_augment.py.
  overrides["augment.photometric"] = False
  if objective in ("byol", "simsiam"):
    # Without negatives, the predictor's cosine regression is the least well conditioned at
    # init: at rate 0.05 the layouts' last-bit differences grew to 5.5e-4 (BYOL) and 2.9e-3
    # (SimSiam) in 20 steps on this machine's jaxlib; at 0.01, 1.2e-7 and 6e-8 (measured).
    # SimSiam's steps compiled quickly (small_config) round differently again: 6.5e-5 at 0.01,
    # 6e-8 at 0.005 (measured).
    overrides["optim.base_lr"] = 0.005 if objective == "simsiam" else 0.01
  if objective in ("directpred", "directcopy"):
    # Their paper presets use plain SGD, under which 20 steps amplify the layouts' ~1e-7
    # reduction-order difference to ~2e-3 (measured; BYOL with the same SGD and augmentation
    # diverges alike, and each layout alone is bitwise repeatable). LARS's trust ratio keeps the
    # comparison well conditioned: 6e-8 / 2.4e-7 (measured).
    overrides["optim.name"] = "lars"
  config = small_config(objective, "synthetic", **overrides)
  batches = host_batches(config, STEPS)
  sharded = run_steps(config, batches, jax.devices())
  single = run_steps(config, batches, jax.devices()[:1])
  assert int(sharded.step) == int(single.step) == STEPS
  assert max_abs_difference(sharded.params, single.params) < 1e-5
  assert max_abs_difference(sharded.batch_stats, single.batch_stats) < 1e-5
  if jax.tree.leaves(single.target_params):
    assert max_abs_difference(sharded.target_params, single.target_params) < 1e-5
  if jax.tree.leaves(single.objective_state):   # MoCo queue, DirectPred's F and W, ...
    assert max_abs_difference(sharded.objective_state, single.objective_state) < 1e-5
  # The training moved the parameters far more than the tolerance, so the check has teeth.
  initial = run_steps(config, [], jax.devices()[:1])
  assert max_abs_difference(initial.params, single.params) > 100 * 1e-5
