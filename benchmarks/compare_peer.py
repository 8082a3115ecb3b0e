r"""Side by side on the CPU: our step against lightly's (../shared/bench/peer_lightly.py).

  bash ../shared/bench/setup_peer.sh          # once: the peer's venv in /tmp/ssl-peer-venv
  python benchmarks/compare_peer.py           # 3 objectives x batch 64, 128
  python benchmarks/compare_peer.py --objectives=moco_v2 --batch=64 --steps=5 --rounds=2

For each (objective, batch) it runs our step benchmark and then the peer, one after the other
in fresh processes (never at the same time), and prints one JSON line per measurement. A round
visits every (objective, batch) once; `--rounds` repeats it. The table gives ours/peer (below 1 =
ours faster) as the median over rounds of each round's ratio: a shared machine's speed drifts by
10-25 % over minutes, which moves both programs of a round together but not rounds apart. The
ratio of the two medians is printed beside it. The work is the peer's (benchmarks/workloads.py
`peer_work`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_SCRIPT = os.path.join(os.path.dirname(_ROOT), "shared", "bench", "peer_lightly.py")
sys.path.insert(0, _ROOT)

from benchmarks.workloads import PEER_METHOD, PEER_OBJECTIVES  # noqa: E402


def _last_json_line(output: str) -> dict:
  for line in reversed(output.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  raise RuntimeError(f"no JSON line in the output:\n{output[-2000:]}")


def run_ours(objective: str, batch: int, steps: int, warmup: int) -> dict:
  command = [sys.executable, os.path.join(_ROOT, "benchmarks", "step.py"), "--workload=peer",
             f"--objectives={objective}", f"--batch={batch}", f"--steps={steps}",
             f"--warmup={warmup}"]
  result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=_ROOT)
  return _last_json_line(result.stdout)


def run_peer(python: str, objective: str, batch: int, steps: int, warmup: int) -> dict:
  command = [python, PEER_SCRIPT, "--method", PEER_METHOD[objective], "--batch", str(batch),
             "--steps", str(steps), "--warmup", str(warmup), "--threads", "2"]
  result = subprocess.run(command, capture_output=True, text=True, check=True)
  record = _last_json_line(result.stdout)
  record["load_average_1min"] = round(os.getloadavg()[0], 2)
  return record


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--objectives", default=",".join(PEER_OBJECTIVES))
  parser.add_argument("--batch", default="64,128")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--rounds", type=int, default=1, help="ours-then-peer repetitions")
  parser.add_argument("--peer_python", default=os.environ.get(
      "PEER_PYTHON", "/tmp/ssl-peer-venv/bin/python"))
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.steps < 1:
    parser.error(f"--rounds and --steps must be at least 1, got {args.rounds} and {args.steps}")
  if not os.path.exists(args.peer_python):
    sys.exit(f"error: no peer interpreter at {args.peer_python}; run "
             "`bash ../shared/bench/setup_peer.sh` or pass --peer_python")

  cells = [(objective, int(batch)) for objective in args.objectives.split(",")
           for batch in args.batch.split(",")]
  for objective, _ in cells:
    if objective not in PEER_METHOD:
      sys.exit(f"error: the peer implements {list(PEER_METHOD)}, not {objective!r}")
  measured = {cell: [] for cell in cells}   # cell -> [(ours record, peer record)], one per round
  for _ in range(args.rounds):
    for objective, batch in cells:
      ours = run_ours(objective, batch, args.steps, args.warmup)
      print(json.dumps(ours), flush=True)
      peer = run_peer(args.peer_python, objective, batch, args.steps, args.warmup)
      print(json.dumps(peer), flush=True)
      measured[(objective, batch)].append((ours, peer))

  print(f"\n{'objective':<10} {'batch':>5} {'ours s':>8} {'peer s':>8} {'ours/peer':>9} "
        f"{'of medians':>10} {'compile s':>9}")
  for (objective, batch), pairs in measured.items():
    summary = summarise(pairs)
    print(f"{objective:<10} {batch:>5} {summary['ours_median_step_s']:>8.3f} "
          f"{summary['peer_median_step_s']:>8.3f} {summary['ours_over_peer']:>9.2f} "
          f"{summary['ratio_of_medians']:>10.2f} {summary['compile_s']:>9.1f}")
    print(json.dumps({"summary": True, "objective": objective, "batch": batch, **summary}),
          flush=True)


def summarise(pairs: list[tuple[dict, dict]]) -> dict:
  """Medians over rounds of (our record, the peer's record) pairs of one (objective, batch)."""
  ours = [o["median_step_s"] for o, _ in pairs]
  peer = [p["median_step_s"] for _, p in pairs]
  round_ratios = [o / p for o, p in zip(ours, peer)]
  return {"ours_median_step_s": statistics.median(ours),
          "peer_median_step_s": statistics.median(peer),
          "ours_over_peer": round(statistics.median(round_ratios), 3),
          "round_ratios": [round(r, 3) for r in round_ratios],
          "ratio_of_medians": round(statistics.median(ours) / statistics.median(peer), 3),
          "compile_s": statistics.median(o["compile_s"] for o, _ in pairs)}


if __name__ == "__main__":
  main()
