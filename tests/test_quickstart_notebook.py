"""docs/quickstart.ipynb, run as a reader runs it: every code cell in order, in one namespace, in
a fresh Python process started outside the clone (so it uses the installed package), with
matplotlib's file-only backend. What the cells leave behind is checked against the run."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "docs", "quickstart.ipynb")

# Runs the notebook's code cells one after the other, like a kernel, then reports the state.
_RUNNER = """
import json, sys
notebook = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
for index, cell in enumerate(cells):
  exec(compile("".join(cell["source"]), f"<cell {index}>", "exec"), namespace)
print("STATE " + json.dumps({
    "cells": len(cells), "workdir": namespace["workdir"],
    "features": list(namespace["features"].shape), "curve": list(namespace["curve"]),
    "summary_knn": namespace["summary"]["eval"]["trained"]["knn_top1"],
    "steps": namespace["summary"]["steps"]}))
"""


@pytest.mark.xdist_group("quickstart_notebook")
def test_every_cell_of_the_quickstart_runs_and_draws_the_knn_curve(tmp_path):
  environment = {**os.environ, "MPLBACKEND": "Agg", "XLA_FLAGS": ""}
  result = subprocess.run([sys.executable, "-c", _RUNNER, NOTEBOOK], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env=environment)
  assert result.returncode == 0, result.stderr[-3000:]
  state = json.loads(result.stdout.split("STATE ", 1)[1])
  assert state["cells"] == 3
  assert state["features"][0] == 1797 and state["features"][1] > 0   # every digit encoded
  steps = [step for step, _ in state["curve"]]
  assert steps == list(range(50, state["steps"], 50)) + [state["steps"]]
  assert state["curve"][-1][1] == state["summary_knn"]
  assert all(0.1 < accuracy <= 1.0 for _, accuracy in state["curve"])   # above chance
  with open(os.path.join(state["workdir"], "knn_curve.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
