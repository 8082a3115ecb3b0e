"""A SLURM job array for a sweep: one array task per run, `sbatch SWEEP_DIR/sweep.sbatch`.

Task i runs the i-th run of SWEEP_DIR/sweep.json: the `case` on SLURM_ARRAY_TASK_ID sets that
run's workdir and override flags, then launches the ordinary training command. A task whose run
already finished (summary.json) exits at once; a requeued or resubmitted task resumes from its
checkpoints. The exit status lands in RUN_DIR/sweep_status.json, as with the local runner, so
`--mode=sweep_summary` reports failures the same way.

`python` is whatever `$PYTHON` names (default: `python` on the PATH, which sbatch passes on from
the submitting shell, so submit from the activated environment).

Time limits and preemption: `--signal=B:TERM@120` has SLURM send SIGTERM to the batch shell two
minutes before the time limit; the shell passes it on to the run, which saves a checkpoint and
exits 143 (main.py's preempted status), and the task then requeues itself (`--requeue`, and
`scontrol requeue` of this array task), so it resumes where it stopped.
"""

from __future__ import annotations

import os
import shlex
from typing import Sequence

from ssl_jax.sweeps.definition import Run
from ssl_jax.sweeps.local import STATUS_FILE, SUMMARY_FILE

SCRIPT_FILE = "sweep.sbatch"
# SIGTERM this long before the time limit: enough for the run to write its checkpoint.
SIGNAL_SECONDS_BEFORE_LIMIT = 120
# main.py's exit status after a SIGTERM that it answered with a checkpoint (128 + SIGTERM).
PREEMPTED_EXIT_STATUS = 143


def sbatch_script(runs: Sequence[Run], sweep_dir: str, *, main_path: str, config_spec: str,
                  base_flags: Sequence[str], sbatch_options: Sequence[str] = (),
                  job_name: str = "ssl_jax_sweep") -> str:
  """The text of the array script; `sbatch_options` become extra `#SBATCH` lines (e.g.
  `--gres=gpu:1`, `--time=04:00:00`)."""
  sweep_dir = os.path.abspath(sweep_dir)
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={job_name}",
      f"#SBATCH --array=0-{len(runs) - 1}",
      f"#SBATCH --output={sweep_dir}/slurm-%A_%a.out",
      "#SBATCH --ntasks=1",
      f"#SBATCH --signal=B:TERM@{SIGNAL_SECONDS_BEFORE_LIMIT}",
      "#SBATCH --requeue",
      *[f"#SBATCH {option}" for option in sbatch_options],
      f"# {len(runs)} runs of ssl-jax; the run list is {sweep_dir}/sweep.json. Options given to",
      "# sbatch on its command line (--gres, --time, --partition, ...) override the lines above.",
      "set -u",
      'PYTHON="${PYTHON:-python}"',
      'case "${SLURM_ARRAY_TASK_ID:?run this script with sbatch, or set SLURM_ARRAY_TASK_ID}" in',
  ]
  for index, run in enumerate(runs):
    run_dir = os.path.join(sweep_dir, run.name)
    flags = " ".join(shlex.quote(flag) for flag in run.flags())
    lines.append(f"  {index}) RUN_WORKDIR={shlex.quote(run_dir)}; RUN_FLAGS=({flags}) ;;")
  lines += [
      '  *) echo "no run for SLURM_ARRAY_TASK_ID=${SLURM_ARRAY_TASK_ID}: this sweep has runs '
      f'0-{len(runs) - 1}" >&2; exit 2 ;;',
      "esac",
      f'if [ -f "$RUN_WORKDIR/{SUMMARY_FILE}" ]; then',
      '  echo "$RUN_WORKDIR finished before (summary.json); nothing to do"; exit 0',
      "fi",
      'mkdir -p "$RUN_WORKDIR"',
      f"cd {shlex.quote(os.path.dirname(os.path.abspath(main_path)))}",
      # In the background so that the shell, which SLURM signals, can pass SIGTERM on to it.
      " ".join(['"$PYTHON"', shlex.quote(os.path.abspath(main_path)),
                shlex.quote(f"--config={config_spec}"),
                *[shlex.quote(flag) for flag in base_flags],
                '"${RUN_FLAGS[@]}"', '--workdir="$RUN_WORKDIR"', "&"]),
      "run_pid=$!",
      "trap 'kill -TERM \"$run_pid\" 2>/dev/null' TERM",
      # A trapped signal ends `wait` early; wait again until the run itself has exited.
      # Bash may reap a quick run before the loop's first test, so wait once unconditionally.
      'wait "$run_pid"; returncode=$?',
      'while kill -0 "$run_pid" 2>/dev/null; do wait "$run_pid"; returncode=$?; done',
      f'echo "{{\\"returncode\\": $returncode}}" > "$RUN_WORKDIR/{STATUS_FILE}"',
      f"if [ $returncode -eq {PREEMPTED_EXIT_STATUS} ] && command -v scontrol >/dev/null; then",
      '  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
      "fi",
      "exit $returncode",
  ]
  return "\n".join(lines) + "\n"


def write_sbatch_script(runs: Sequence[Run], sweep_dir: str, **kwargs) -> str:
  path = os.path.join(sweep_dir, SCRIPT_FILE)
  with open(path, "w") as f:
    f.write(sbatch_script(runs, sweep_dir, **kwargs))
  os.chmod(path, 0o755)
  return path
