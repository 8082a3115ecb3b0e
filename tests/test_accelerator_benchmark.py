"""benchmarks/accelerator.py, the one prepared GPU command, kept from rotting on CPU: its dry run
(every section at tiny shapes) runs end to end and reports what the GPU run would, and the
machines it must refuse are refused with one line before any work."""

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks.accelerator_plan import SECTIONS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [sys.executable, os.path.join(REPO, "benchmarks", "accelerator.py")]


def _run(*args, env=None, timeout=900):
  # One CPU device: the dry run checks the command, not sharding (other tests do that).
  env = {**os.environ, "XLA_FLAGS": "", **(env or {})}
  return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=env, cwd=REPO,
                        timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("accelerator") / "lines.jsonl"
  result = _run("--dry_run", f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  return records, out


@pytest.mark.xdist_group("accelerator_dry_run")
def test_the_dry_run_measures_every_section_and_writes_what_it_prints(dry_run):
  records, out = dry_run
  assert [json.loads(line) for line in out.read_text().splitlines()] == records
  assert records[0]["section"] == "device" and records[0]["dry_run"] is True
  assert records[-1]["section"] == "summary"
  sections = [record["section"] for record in records]
  assert set(SECTIONS) <= set(sections) and "skipped" not in sections
  by_section = {name: [r for r in records if r["section"] == name] for name in SECTIONS}

  assert sorted(r["objective"] for r in by_section["r50_synthetic"]) == ["byol", "moco_v2",
                                                                          "simsiam"]
  for record in by_section["r50_synthetic"]:
    assert record["dtype"] == "bfloat16" and record["img_per_s"] > 0
    assert record["achieved_tflops"] > 0   # MFU against the H100's 989 TFLOP/s:
    assert record["mfu"] == pytest.approx(record["achieved_tflops"] / 989, abs=1e-4)
    assert record["compile_s"] > 0 and record["peak_estimate_bytes"] > 0
  host = [r for r in by_section["host_pipeline"] if r.get("kind") == "host_pipeline"]
  assert [r["workers"] for r in host] == [0, 1] and all(r["img_per_s"] > 0 for r in host)
  synthetic, fed = by_section["r50_pipeline"]
  assert (synthetic["data"], fed["data"]) == ("synthetic", "pipeline")
  assert fed["pipeline_over_synthetic"] == pytest.approx(fed["img_per_s"] / synthetic["img_per_s"],
                                                         abs=1e-3)
  augment, = by_section["device_augment"]
  assert 0 < augment["share_of_step"] == pytest.approx(
      by_section["r50_synthetic"][0]["img_per_s"] / augment["img_per_s"], abs=1e-3)
  assert [r["steps_per_dispatch"] for r in by_section["r18_dispatch"]] == [2]


@pytest.mark.xdist_group("accelerator_dry_run")
def test_the_learning_check_trains_both_dtypes_from_one_start(dry_run):
  records, _ = dry_run
  float32, bfloat16, comparison = [r for r in records if r["section"] == "bf16_learning"]
  assert (float32["dtype"], bfloat16["dtype"]) == ("float32", "bfloat16")
  steps = [p["step"] for p in float32["curve"]]
  assert steps == [p["step"] for p in bfloat16["curve"]] == [1, 2, 4]
  # Same initial weights and batches: the first step's figures differ only by bfloat16 rounding.
  first32, first16 = float32["curve"][0], bfloat16["curve"][0]
  assert first16["projection_std"] == pytest.approx(first32["projection_std"], rel=0.02)
  assert all(math.isfinite(p["loss"]) for p in float32["curve"] + bfloat16["curve"])
  assert comparison["float32_final_loss"] == pytest.approx(
      sum(p["loss"] for p in float32["curve"][-3:]) / 3, abs=1e-5)


@pytest.mark.xdist_group("accelerator_dry_run")
def test_the_summary_holds_every_goal_with_its_measurement(dry_run):
  records, _ = dry_run
  goals = {goal["goal"]: goal for goal in records[-1]["goals"]}
  assert goals["r50 moco_v2 bf16 synthetic img/s"]["target"] == 4500
  assert goals["r50 moco_v2 bf16 synthetic img/s"]["floor"] == 3000
  moco = [r["img_per_s"] for r in records if r["section"] == "r50_synthetic"
          and r["objective"] == "moco_v2"]
  assert goals["r50 moco_v2 bf16 synthetic img/s"]["measured"] == max(moco)
  assert all(goal["measured"] is not None for goal in goals.values())
  assert goals["pipeline / synthetic"]["target"] == 0.8


def test_a_spent_budget_skips_every_measurement_and_still_ends_with_the_summary():
  result = _run("--dry_run", "--budget_s=0", timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r["section"] for r in records[1:-1]] == ["skipped"] * len(records[2:])
  skipped_sections = {r["skipped_section"] for r in records[1:-1]}
  assert skipped_sections == set(SECTIONS)
  assert all(goal["measured"] is None for goal in records[-1]["goals"])


def test_without_an_accelerator_it_refuses_in_one_line():
  result = _run(timeout=300)
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.count("\n") == 1 and "no accelerator" in result.stderr
  assert "'cpu'" in result.stderr and "--dry_run" in result.stderr


def test_a_missing_carried_package_is_named(tmp_path):
  """The device image lacks grain unless its wheel is carried: a grain that cannot be imported
  (shadowed here by a package that fails to import) is named, with how to carry it."""
  (tmp_path / "grain").mkdir()
  (tmp_path / "grain" / "__init__.py").write_text("raise ImportError('not carried')\n")
  result = _run("--dry_run", env={"PYTHONPATH": str(tmp_path)}, timeout=300)
  assert result.returncode == 2 and result.stdout == ""
  assert "missing packages grain:" in result.stderr
  assert "benchmarks/device_wheels.sh" in result.stderr
