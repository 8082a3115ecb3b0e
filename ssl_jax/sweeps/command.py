"""`python main.py --mode=sweep` and `--mode=sweep_summary`: build the runs, record them in
SWEEP_DIR/sweep.json, then run them here, emit a SLURM array, or only list them; and the table.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
from typing import Any, Sequence

import ml_collections

from ssl_jax import config_validation
from ssl_jax.sweeps import definition, local, slurm, summary
from ssl_jax.sweeps.definition import Run, SweepError

RUNS_FILE = "sweep.json"
EMIT_CHOICES = ("run", "slurm", "list")


def absolute_config_spec(config_spec: str) -> str:
  """`path.py:arg` with an absolute path, so runs launched from elsewhere find the file."""
  path, colon, arg = config_spec.partition(":")
  return os.path.abspath(path) + colon + arg


def _check_run_configs(config: ml_collections.ConfigDict, runs: Sequence[Run]) -> None:
  """Every run's config passes the checks that do not depend on devices, before any run
  starts (a bad value for optim.name fails now, not after the runs before it)."""
  for run in runs:
    run_config = copy.deepcopy(config)
    for key, value in run.overrides.items():
      *parents, leaf = key.split(".")
      node = run_config
      for part in parents:
        node = node[part]
      node[leaf] = value
    try:
      config_validation.validate_config(run_config, num_devices=1, process_count=1)
    except config_validation.ConfigError as error:
      raise SweepError(f"sweep run {run.name}: {error}") from None


def _json_value(value: Any) -> Any:
  return list(value) if isinstance(value, tuple) else value


def write_runs_file(runs: Sequence[Run], sweep_dir: str, *, config_spec: str,
                    base_flags: Sequence[str]) -> str:
  path = os.path.join(sweep_dir, RUNS_FILE)
  with open(path, "w") as f:
    json.dump({
        "config": config_spec,
        "base_flags": list(base_flags),
        "runs": [{"index": index, "name": run.name,
                  "workdir": os.path.join(sweep_dir, run.name),
                  "overrides": {key: _json_value(value) for key, value in run.overrides.items()},
                  "flags": run.flags()} for index, run in enumerate(runs)],
    }, f, indent=2)
  return path


def read_runs(sweep_dir: str) -> list[Run]:
  """The runs of SWEEP_DIR: from its sweep.json, or else every subdirectory holding a
  summary.json (a sweep made by hand, one workdir per run)."""
  path = os.path.join(sweep_dir, RUNS_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return [Run(run["overrides"], run["name"]) for run in json.load(f)["runs"]]
  if not os.path.isdir(sweep_dir):
    raise SweepError(f"sweep directory {sweep_dir} does not exist")
  names = sorted(name for name in os.listdir(sweep_dir)
                 if os.path.exists(os.path.join(sweep_dir, name, local.SUMMARY_FILE)))
  if not names:
    raise SweepError(f"{sweep_dir} holds neither {RUNS_FILE} nor run directories with "
                     f"{local.SUMMARY_FILE}; give the --workdir of a sweep")
  return [Run({}, name) for name in names]


def run_sweep(config: ml_collections.ConfigDict, *, config_spec: str,
              base_overrides: dict[str, Any], main_path: str, sweep_dir: str,
              sweep_flags: Sequence[str] = (), sweep_file: str | None = None,
              emit: str = "run", metric: str = summary.DEFAULT_METRIC, ascending: bool = False,
              sbatch_options: Sequence[str] = ()) -> int:
  """Builds and checks the sweep, then runs it here (emit='run'), writes a SLURM array script
  (emit='slurm') or only lists it (emit='list'). Returns the exit status for main.py."""
  if emit not in EMIT_CHOICES:
    raise SweepError(f"--sweep_emit={emit!r}; choose one of {list(EMIT_CHOICES)}")
  summary.check_metric_name(metric)
  runs = definition.build_runs(config, sweep_flags=sweep_flags, sweep_file=sweep_file,
                               fixed_overrides=base_overrides)
  _check_run_configs(config, runs)
  sweep_dir = config_validation.prepare_workdir(sweep_dir)
  config_spec = absolute_config_spec(config_spec)
  base_flags = [definition.override_flag(key, value) for key, value in base_overrides.items()]
  runs_path = write_runs_file(runs, sweep_dir, config_spec=config_spec, base_flags=base_flags)
  launch = dict(main_path=os.path.abspath(main_path), config_spec=config_spec,
                base_flags=base_flags)
  if emit == "list":
    for index, run in enumerate(runs):
      command = local.run_command(run, run_dir=os.path.join(sweep_dir, run.name),
                                  python="python", **launch)
      # Quoted for a POSIX shell: tuple values such as (0.2,1.0) are shell syntax otherwise.
      print(f"{index}: {shlex.join(command)}")
    print(f"wrote the {len(runs)} runs to {runs_path}")
    return 0
  if emit == "slurm":
    script = slurm.write_sbatch_script(runs, sweep_dir, sbatch_options=sbatch_options, **launch)
    print(f"wrote {script} ({len(runs)} array tasks) and the run list {runs_path}\n"
          f"submit:    sbatch {script}\n"
          f"summarise: python {os.path.relpath(main_path)} --mode=sweep_summary "
          f"--workdir={sweep_dir}")
    return 0
  print(f"sweep of {len(runs)} runs in {sweep_dir} (run list: {runs_path})", flush=True)
  status = local.run_locally(runs, sweep_dir, **launch)
  print(summary.summarize(runs, sweep_dir, metric, descending=not ascending), flush=True)
  return status


def print_summary(sweep_dir: str, metric: str = summary.DEFAULT_METRIC, *,
                  ascending: bool = False) -> int:
  """--mode=sweep_summary: the table of an existing sweep directory."""
  summary.check_metric_name(metric)
  sweep_dir = os.path.abspath(sweep_dir)
  print(summary.summarize(read_runs(sweep_dir), sweep_dir, metric, descending=not ascending))
  return 0
