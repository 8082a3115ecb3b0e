r"""Side by side on the CPU: our step against lightly's (../shared/bench/peer_lightly.py).

  bash ../shared/bench/setup_peer.sh          # once: the peer's venv in /tmp/ssl-peer-venv
  python benchmarks/compare_peer.py           # 3 objectives x batch 64, 128
  python benchmarks/compare_peer.py --objectives=moco_v2 --batch=64 --steps=5 --rounds=2

For each (objective, batch) it runs our step benchmark and then the peer, one after the other
in fresh processes (never at the same time), `--rounds` times alternating, and prints one JSON
line per measurement plus a table of ours/peer median step time (below 1 = ours faster). The
work is the peer's (benchmarks/workloads.py `peer_work`).
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
  if not os.path.exists(args.peer_python):
    sys.exit(f"error: no peer interpreter at {args.peer_python}; run "
             "`bash ../shared/bench/setup_peer.sh` or pass --peer_python")

  rows = []
  for objective in args.objectives.split(","):
    if objective not in PEER_METHOD:
      sys.exit(f"error: the peer implements {list(PEER_METHOD)}, not {objective!r}")
    for batch in (int(b) for b in args.batch.split(",")):
      ours_steps, peer_steps = [], []
      for _ in range(args.rounds):
        ours = run_ours(objective, batch, args.steps, args.warmup)
        print(json.dumps(ours), flush=True)
        peer = run_peer(args.peer_python, objective, batch, args.steps, args.warmup)
        print(json.dumps(peer), flush=True)
        ours_steps.append(ours["median_step_s"])
        peer_steps.append(peer["median_step_s"])
      ours_median, peer_median = statistics.median(ours_steps), statistics.median(peer_steps)
      rows.append((objective, batch, ours_median, peer_median, ours["compile_s"]))

  print(f"\n{'objective':<10} {'batch':>5} {'ours s':>8} {'peer s':>8} {'ours/peer':>9} "
        f"{'compile s':>9}")
  for objective, batch, ours_median, peer_median, compile_s in rows:
    print(f"{objective:<10} {batch:>5} {ours_median:>8.3f} {peer_median:>8.3f} "
          f"{ours_median / peer_median:>9.2f} {compile_s:>9.1f}")
    print(json.dumps({"summary": True, "objective": objective, "batch": batch,
                      "ours_median_step_s": ours_median, "peer_median_step_s": peer_median,
                      "ours_over_peer": round(ours_median / peer_median, 3)}), flush=True)


if __name__ == "__main__":
  main()
