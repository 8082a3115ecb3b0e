r"""Where the time of one train step goes, from a profile of the compiled step.

  python benchmarks/profile_step.py --objective=moco_v2 --batch=64
  python benchmarks/profile_step.py --workload=imagenet_r50 --objective=byol --batch=128

Traces a few steps with `jax.profiler`, reads the per-operation events of the trace, maps each
operation to the phase it came from through the HLO metadata of the compiled step (the step's
named scopes: augment, loss, target_forward, optimizer, ema, objective_state, nonfinite_guard,
monitors; backward operations are the transposes of the loss), and prints one JSON line per
phase with its share of the operation time, plus the share of the top operations.

For each operation's real cost, pin the run to one core (`taskset -c 0 python ...`). With
several cores, XLA:CPU runs the convolutions asynchronously on its thread pool, beside the fused
loops. The loops' events then absorb the time they wait for a core, and the convolutions'
events record only their launch.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

import jax  # noqa: E402

from benchmarks import workloads  # noqa: E402
from benchmarks.step import add_conv_impl_argument, random_batch  # noqa: E402
from ssl_jax import cpu  # noqa: E402
from ssl_jax.train import Experiment  # noqa: E402

# Phase of an operation from its op_name (first match wins; order matters: a target forward is
# also inside the loss scope, a backward op carries the forward scopes under transpose(...)).
PHASES = (
    ("backward", re.compile(r"transpose\(")),
    ("forward target", re.compile(r"target_forward")),
    ("augmentation", re.compile(r"augment")),
    ("forward online + loss", re.compile(r"jvp\(loss\)|/loss")),
    ("optimizer", re.compile(r"optimizer")),
    ("ema", re.compile(r"/ema")),
    ("objective state (queue)", re.compile(r"objective_state")),
    ("nonfinite guard", re.compile(r"nonfinite_guard")),
    ("monitors", re.compile(r"monitors")),
)

_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_COMPUTATION = re.compile(r"^\s*%?([\w.\-]+)\s+.*\{\s*$")


def op_names_by_instruction(hlo_text: str) -> dict[str, str]:
  """instruction name -> op_name; a fusion without metadata of its own takes that of the first
  instruction with metadata in the computation it calls."""
  names: dict[str, str] = {}
  first_in_computation: dict[str, str] = {}
  calls: dict[str, str] = {}
  computation = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header and "=" not in line.split("{")[0]:
      computation = header.group(1)
      continue
    instruction = re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=", line)
    if not instruction:
      continue
    name = instruction.group(1)
    op_name = _OP_NAME.search(line)
    if op_name:
      names[name] = op_name.group(1)
      if computation is not None:
        first_in_computation.setdefault(computation, op_name.group(1))
    called = _CALLS.search(line)
    if called:
      calls[name] = called.group(1)
  for name, computation_name in calls.items():
    if name not in names and computation_name in first_in_computation:
      names[name] = first_in_computation[computation_name]
  return names


def phase_of(op_name: str | None) -> str:
  if not op_name:
    return "unattributed"
  for phase, pattern in PHASES:
    if pattern.search(op_name):
      return phase
  return "other"


def profile(config, steps: int) -> dict:
  experiment = Experiment(config, workdir=None)
  state, state_shardings = experiment.initial_state()
  jitted_step = experiment.jitted_train_step(state_shardings)
  batch = random_batch(experiment)
  compiled = jitted_step.lower(state, batch).compile()
  op_names = op_names_by_instruction(compiled.as_text())
  state = jax.block_until_ready(compiled(state, batch)[0])

  trace_dir = tempfile.mkdtemp(prefix="ssl_jax_profile_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(steps):
      state = jax.block_until_ready(compiled(state, batch)[0])
  trace_file = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
  with gzip.open(trace_file) as f:
    events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]

  by_phase: collections.Counter = collections.Counter()
  by_operation: collections.Counter = collections.Counter()
  skipped: collections.Counter = collections.Counter()
  for event in events:
    name = event["name"]
    if name not in op_names:   # runtime bookkeeping events, Python frames
      skipped[name] += event["dur"]
      continue
    by_phase[phase_of(op_names[name])] += event["dur"]
    by_operation[name] += event["dur"]
  total = sum(by_phase.values())
  return {
      "objective": config.objective, "batch": experiment.global_batch, "steps": steps,
      "operation_ms_per_step": round(total / 1e3 / steps, 1),
      "phases": {phase: round(duration / total, 4) for phase, duration in by_phase.most_common()},
      "top_operations": [{"name": name, "share": round(duration / total, 4),
                          "op_name": op_names[name][-120:]}
                         for name, duration in by_operation.most_common(8)],
      "events_not_operations_ms": {name: round(duration / 1e3, 1)
                                   for name, duration in skipped.most_common(6)},
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workload", default="peer", choices=sorted(workloads.WORKLOADS))
  parser.add_argument("--objective", default="moco_v2")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=2)
  add_conv_impl_argument(parser)
  args = parser.parse_args(argv)
  cpu.configure()   # the process settings main.py makes, before JAX's backends exist
  config = workloads.WORKLOADS[args.workload](args.objective, args.batch)
  config.model.conv_impl = args.conv_impl
  print(json.dumps(profile(config, args.steps)), flush=True)


if __name__ == "__main__":
  main()
