"""The command line as users run it: relative workdir, SIGTERM saves and exits 143, the same
command resumes and finishes."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from engine_helpers import environment_with_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Enough steps after the 15th for the signal to land mid-run: the signal sent at step 15 stopped
# the run at step 17 (measured), and the 23 steps after it, quickly compiled and so several times
# slower than fully compiled ones, leave seconds of margin.
TOTAL_STEPS = 40
# The command line is under test here, not the sharding: the runs' steps are ~3x faster on 2 of
# the 2 cores' forced devices than on 8.
CLI_DEVICES = 2


def _command(workdir: str) -> list[str]:
  return [sys.executable, os.path.join(REPO, "main.py"),
          "--config=" + os.path.join(REPO, "configs", "moco_v2.py") + ":digits,tiny",
          "--workdir=" + workdir,   # relative on purpose
          "--config.model.name=resnet10", "--config.model.width=4",
          "--config.data.image_size=16", f"--config.num_steps={TOTAL_STEPS}",
          "--config.log_every_steps=5", "--config.checkpoint_every_steps=1000",
          "--config.eval.evaluators=('knn',)",
          "--config.eval.baselines=('random_init','random_init_data_bn')",
          "--config.eval.max_examples=256",
          # A few dozen steps: compiling is most of a run (ssl_jax/quick_compile.py).
          "--config.quick_compile=True",
          # No TensorBoard events, so neither launch imports TensorFlow (~7 s each); the tiny
          # jobs' test checks the events.
          "--config.tensorboard=False"]


def _wait_for(predicate, timeout: float, process) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if process.poll() is not None:
      raise AssertionError(f"process exited early with {process.returncode}")
    time.sleep(0.2)
  raise AssertionError("timed out")


def test_sigterm_saves_and_the_same_command_resumes(tmp_path):
  log_path = tmp_path / "log.txt"
  with open(log_path, "w") as log:
    process = subprocess.Popen(_command("run"), cwd=tmp_path,
                               env=environment_with_devices(CLI_DEVICES), stdout=log,
                               stderr=subprocess.STDOUT)
    # Training has started once the progress bar has passed a few log steps.
    _wait_for(lambda: f"15/{TOTAL_STEPS}" in log_path.read_text(), 240, process)
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(timeout=120)
  output = log_path.read_text()
  assert returncode == 143, output[-3000:]
  assert "run the same command again to resume" in output
  checkpoint_dir = tmp_path / "run" / "checkpoints"
  saved = sorted(int(name) for name in os.listdir(checkpoint_dir) if name.isdigit())
  assert len(saved) == 1 and 15 <= saved[0] < TOTAL_STEPS, saved
  assert not (tmp_path / "run" / "summary.json").exists()

  result = subprocess.run(_command("run"), cwd=tmp_path,
                          env=environment_with_devices(CLI_DEVICES), capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["steps"] == TOTAL_STEPS
  assert (tmp_path / "run" / "encoder" / "encoder.json").exists()
  assert not (tmp_path / "run" / "tensorboard").exists()
  # Resumed, not restarted: the progress bar starts from the saved step.
  assert f"{saved[0]}/{TOTAL_STEPS}" in result.stderr
  # The launch says when it compiles and when the final evaluation runs.
  assert re.search(r"compiling the train step of moco_v2:digits,tiny \.\.\.\ncompiled in \d+ s",
                   result.stdout), result.stdout[-2000:]
  assert "evaluation: knn on trained, random_init, random_init_data_bn ..." in result.stdout
