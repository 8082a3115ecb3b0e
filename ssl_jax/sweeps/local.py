"""Runs the runs of a sweep one after another on this machine, each as its own `main.py` process.

A process per run gives each run a fresh JAX (no compiled programs, device memory or global
flags carried over) and keeps a crash of one run from ending the sweep: its exit status is
recorded in RUN_DIR/sweep_status.json and shown in the summary table. Each run is the ordinary
training command with `--workdir=SWEEP_DIR/<run name>`, so it resumes from its checkpoints; runs
that already wrote summary.json are skipped. SIGTERM is passed on to the running run (which saves
a checkpoint) and ends the sweep; the same sweep command resumes it.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

from ssl_jax.run_records import SUMMARY_FILE
from ssl_jax.sweeps.definition import Run

STATUS_FILE = "sweep_status.json"
LOG_FILE = "sweep_log.txt"
EXIT_PREEMPTED = 143


def run_command(run: Run, *, main_path: str, config_spec: str, base_flags: Sequence[str],
                run_dir: str, python: str = sys.executable) -> list[str]:
  """The `python main.py ...` command line of one run."""
  return [python, main_path, f"--config={config_spec}", *base_flags, *run.flags(),
          f"--workdir={run_dir}"]


def write_status(run_dir: str, returncode: int, seconds: float) -> None:
  with open(os.path.join(run_dir, STATUS_FILE), "w") as f:
    json.dump({"returncode": returncode, "seconds": seconds}, f)


@contextlib.contextmanager
def _forward_sigterm(state: dict):
  """While active, SIGTERM goes to the running child (state['process']) and stops the sweep."""
  def handler(signum, frame):
    del frame
    state["sigterm"] = True
    process = state.get("process")
    if process is not None and process.poll() is None:
      process.send_signal(signum)
  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def _stream(process: subprocess.Popen, log_path: str) -> None:
  """Copies the child's output to our stdout and to its log file as it comes."""
  # Incremental: a progress bar's multi-byte characters may be split between two reads.
  decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
  with open(log_path, "ab") as log:
    while True:
      chunk = os.read(process.stdout.fileno(), 65536)
      log.write(chunk)
      log.flush()
      sys.stdout.write(decoder.decode(chunk, final=not chunk))
      sys.stdout.flush()
      if not chunk:
        break


def run_locally(runs: Sequence[Run], sweep_dir: str, *, main_path: str, config_spec: str,
                base_flags: Sequence[str]) -> int:
  """Runs every unfinished run in turn; returns 0, 1 if any run failed, or 143 after SIGTERM."""
  state: dict = {"sigterm": False, "process": None}
  any_failed = False
  with _forward_sigterm(state):
    for index, run in enumerate(runs):
      run_dir = os.path.join(sweep_dir, run.name)
      header = f"[sweep {index + 1}/{len(runs)}] {run.name}"
      if state["sigterm"]:   # arrived between two runs
        print(f"{header}: not started (SIGTERM); run the same sweep command to resume",
              flush=True)
        return EXIT_PREEMPTED
      if os.path.exists(os.path.join(run_dir, SUMMARY_FILE)):
        print(f"{header}: finished before (summary.json), skipped", flush=True)
        continue
      os.makedirs(run_dir, exist_ok=True)
      command = run_command(run, main_path=main_path, config_spec=config_spec,
                            base_flags=base_flags, run_dir=run_dir)
      print(f"{header}: {' '.join(command[1:])}", flush=True)
      start = time.perf_counter()
      process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
      state["process"] = process
      try:
        _stream(process, os.path.join(run_dir, LOG_FILE))
        returncode = process.wait()
      except KeyboardInterrupt:   # Ctrl-C reached the child too; let it finish exiting
        process.wait()
        write_status(run_dir, process.returncode, time.perf_counter() - start)
        raise
      finally:
        state["process"] = None
      write_status(run_dir, returncode, time.perf_counter() - start)
      if state["sigterm"] or returncode == EXIT_PREEMPTED:
        print(f"{header}: stopped by SIGTERM (exit {returncode}); run the same sweep command "
              "to resume", flush=True)
        return EXIT_PREEMPTED
      if returncode != 0:
        any_failed = True
        print(f"{header}: FAILED with exit status {returncode}; its output is in "
              f"{os.path.join(run_dir, LOG_FILE)}; the sweep goes on", flush=True)
  return 1 if any_failed else 0
