"""Interrupt and resume: the final state is bitwise identical to an uninterrupted run, and the
data stream resumes exactly where the checkpoint left it."""

import os

import jax
import numpy as np
import pytest

from engine_helpers import small_config
from ssl_jax import checkpointing, run_records, train

TOTAL_STEPS = 12
STOP_AT = 5


def _final_state(config, workdir):
  """(state, iterator state) of the latest checkpoint in `workdir`."""
  experiment = train.Experiment(config)
  checkpointer = checkpointing.TrainCheckpointer(
      os.path.join(workdir, train.CHECKPOINT_DIR), max_to_keep=10)
  iterator = iter(experiment.train_dataset())
  state = checkpointer.restore(checkpointer.latest_step(), experiment.abstract_state, iterator)
  checkpointer.close()
  return jax.device_get(state), iterator.get_state()


@pytest.mark.parametrize("objective", ["moco_v2"])
def test_interrupted_run_resumes_bitwise(tmp_path, objective):
  config = small_config(objective, num_steps=TOTAL_STEPS, checkpoint_every_steps=4)
  uninterrupted = str(tmp_path / "uninterrupted")
  interrupted = str(tmp_path / "interrupted")
  train.train_and_evaluate(config, uninterrupted, show_progress=False)

  with pytest.raises(train.Preempted) as stopped:
    train.train_and_evaluate(config, interrupted, stop_at_step=STOP_AT, show_progress=False)
  assert stopped.value.step == STOP_AT
  # The checkpoint at the stop holds the iterator exactly STOP_AT batches in.
  experiment = train.Experiment(config)
  fresh = iter(experiment.train_dataset())
  for _ in range(STOP_AT):
    next(fresh)
  saved_state, saved_data = _final_state(config, interrupted)
  assert int(saved_state.step) == STOP_AT
  assert saved_data == fresh.get_state()

  train.train_and_evaluate(config, interrupted, show_progress=False)   # same call resumes
  expected, expected_data = _final_state(config, uninterrupted)
  resumed, resumed_data = _final_state(config, interrupted)
  assert int(resumed.step) == TOTAL_STEPS
  assert resumed_data == expected_data
  leaves_expected = jax.tree.leaves(expected)
  leaves_resumed = jax.tree.leaves(resumed)
  assert len(leaves_expected) == len(leaves_resumed)
  for a, b in zip(leaves_expected, leaves_resumed):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))   # bitwise, incl. queue and EMA
  # The metrics history of the resumed run reads as one run: same steps, same losses.
  history = {name: run_records.read_jsonl(os.path.join(str(tmp_path / name),
                                                      run_records.METRICS_FILE))
             for name in ("uninterrupted", "interrupted")}
  assert [r["step"] for r in history["interrupted"]] == [r["step"] for r in history["uninterrupted"]]
  assert [r["loss"] for r in history["interrupted"]] == [r["loss"] for r in history["uninterrupted"]]
