"""Sweeps: --sweep products and sweep files typed against the config, bad keys and values, run
directory names, the SLURM array script (its task lookup run by bash), the summary table and CSV
on hand-written summary.json files, and one real sweep of tiny runs through main.py."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from engine_helpers import environment_with_devices
from ssl_jax.sweeps import command, definition, local, slurm, summary
from ssl_jax.sweeps.definition import SweepError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, "main.py")
CONFIG_SPEC = os.path.join(REPO, "configs", "moco_v2.py") + ":digits"


def _config() -> ml_collections.ConfigDict:
  config = importlib.import_module("configs.moco_v2").get_config("digits")
  config.lock()
  return config


def _runs(sweep_flags=(), sweep_file=None, fixed=()):
  return definition.build_runs(_config(), sweep_flags=sweep_flags, sweep_file=sweep_file,
                               fixed_overrides=fixed)


# --- definition -------------------------------------------------------------------------------

def test_flag_product_is_the_cartesian_product_with_values_typed_as_the_fields():
  runs = _runs(["optim.base_lr=1e-3,3e-3", "model.width=8,16;eval.at_end=false,yes"])
  assert [run.overrides for run in runs] == [
      {"optim.base_lr": 0.001, "model.width": 8, "eval.at_end": False},
      {"optim.base_lr": 0.001, "model.width": 8, "eval.at_end": True},
      {"optim.base_lr": 0.001, "model.width": 16, "eval.at_end": False},
      {"optim.base_lr": 0.001, "model.width": 16, "eval.at_end": True},
      {"optim.base_lr": 0.003, "model.width": 8, "eval.at_end": False},
      {"optim.base_lr": 0.003, "model.width": 8, "eval.at_end": True},
      {"optim.base_lr": 0.003, "model.width": 16, "eval.at_end": False},
      {"optim.base_lr": 0.003, "model.width": 16, "eval.at_end": True},
  ]
  types = [(type(v) for v in run.overrides.values()) for run in runs]
  assert all(list(t) == [float, int, bool] for t in types)
  # An int written for a float field is a float; tuples keep their element type; strings stay.
  runs = _runs(["config.optim.base_lr=1", "augment.crop_scale=(0.3,1),(0.5, 1.0)",
                "eval.knn.ks=(5,),(10,50)", "optim.name=sgd,adamw"])
  assert len(runs) == 1 * 2 * 2 * 2
  first = runs[0].overrides
  assert first == {"optim.base_lr": 1.0, "augment.crop_scale": (0.3, 1.0), "eval.knn.ks": (5,),
                   "optim.name": "sgd"}
  assert type(first["optim.base_lr"]) is float
  assert [type(x) for x in first["augment.crop_scale"]] == [float, float]
  assert [run.overrides["eval.knn.ks"] for run in runs[:4]] == [(5,), (5,), (10, 50), (10, 50)]
  # The flags reproduce the values exactly, in the form ml_collections parses.
  assert runs[0].flags() == ["--config.optim.base_lr=1.0", "--config.augment.crop_scale=(0.3,1.0)",
                             "--config.eval.knn.ks=(5,)", "--config.optim.name=sgd"]


def test_sweep_file_runs_are_typed_and_combine_with_flags(tmp_path):
  path = tmp_path / "my_sweep.py"
  path.write_text(
      "def get_sweep(arg=None):\n"
      "  scale = 10 if arg == 'big' else 1\n"
      "  return [{'optim.base_lr': 1 * scale}, {'config.model.width': 4 * scale,"
      " 'augment.crop_scale': [0.2, 1]}]\n")
  runs = _runs(sweep_file=str(path))
  assert [run.overrides for run in runs] == [
      {"optim.base_lr": 1.0}, {"model.width": 4, "augment.crop_scale": (0.2, 1.0)}]
  runs = _runs(["eval.at_end=true,false"], sweep_file=f"{path}:big")
  assert [run.overrides for run in runs] == [
      {"optim.base_lr": 10.0, "eval.at_end": True},
      {"optim.base_lr": 10.0, "eval.at_end": False},
      {"model.width": 40, "augment.crop_scale": (0.2, 1.0), "eval.at_end": True},
      {"model.width": 40, "augment.crop_scale": (0.2, 1.0), "eval.at_end": False},
  ]
  # The shipped example: 3 learning rates x 2 weight decays, then two paired runs.
  example = os.path.join(REPO, "configs", "sweeps", "moco_v2_digits.py")
  runs = _runs(sweep_file=example)
  assert len(runs) == 8
  assert runs[1].overrides == {"optim.base_lr": 3e-4, "optim.weight_decay": 1e-2}
  assert runs[7].overrides == {"objective_config.temperature": 0.05, "optim.base_lr": 3e-4}
  assert [run.overrides for run in _runs(sweep_file=example + ":lr")] == [
      {"optim.base_lr": 3e-4}, {"optim.base_lr": 1e-3}, {"optim.base_lr": 3e-3}]


@pytest.mark.parametrize("sweep_flags, expected", [
    (["model.widht=8,16"], ["unknown config key 'config.model.widht'",
                            "allowed fields: ['conv_impl', 'conv_init', 'dtype', 'name', "
                            "'stem', 'width']"]),
    (["optimizer.base_lr=0.1"], ["config has no field 'optimizer'", "'optim'"]),
    (["optim=0.1"], ["config.optim is a group of fields", "'optim.base_lr'"]),
    (["optim.base_lr=0.1,fast"], ["config.optim.base_lr expects a float, got 'fast'"]),
    (["model.width=8,8.5"], ["config.model.width expects an int, got '8.5'"]),
    (["eval.at_end=maybe"], ["config.eval.at_end expects a bool", "'maybe'"]),
    (["augment.crop_scale=0.5"], ["config.augment.crop_scale expects a tuple", "0.5"]),
    (["eval.knn.ks=(5.5,)"], ["config.eval.knn.ks expects an int, got 5.5"]),
    (["optim.base_lr"], ["'optim.base_lr' is not key=v1,v2,..."]),
    (["optim.base_lr=1e-3,,3e-3"], ["config.optim.base_lr has an empty value"]),
    (["optim.base_lr=0.1", "optim.base_lr=0.2"], ["config.optim.base_lr is swept twice"]),
    (["optim.base_lr=0.1,1e-1"], ["runs 0 and 1 are the same run (optim.base_lr=0.1)"]),
])
def test_bad_sweep_flags_name_the_key_and_what_is_allowed(sweep_flags, expected):
  with pytest.raises(SweepError) as error:
    _runs(sweep_flags)
  for text in expected:
    assert text in str(error.value)


def test_bad_sweep_files_and_clashes_are_rejected(tmp_path):
  path = tmp_path / "bad.py"
  path.write_text("def get_sweep():\n  return [{'model.width': True}]\n")
  with pytest.raises(SweepError, match=r"config.model.width expects an int, got True"):
    _runs(sweep_file=str(path))
  path.write_text("def get_sweep():\n  return [{'optim.base_lr': '0.1'}]\n")
  with pytest.raises(SweepError, match=r"config.optim.base_lr expects a float, got '0.1'"):
    _runs(sweep_file=str(path))
  path.write_text("def get_sweep():\n  return {'optim.base_lr': 0.1}\n")
  with pytest.raises(SweepError, match="must return a list of dicts"):
    _runs(sweep_file=str(path))
  with pytest.raises(SweepError, match="has no function get_sweep"):
    _runs(sweep_file=os.path.join(REPO, "configs", "moco_v2.py"))
  with pytest.raises(SweepError, match="does not exist"):
    _runs(sweep_file=str(tmp_path / "missing.py"))
  with pytest.raises(SweepError, match=r"unknown sweep arg 'wd'"):
    _runs(sweep_file=os.path.join(REPO, "configs", "sweeps", "moco_v2_digits.py") + ":wd")
  path.write_text("def get_sweep():\n  return [{'optim.base_lr': 0.1}]\n")
  with pytest.raises(SweepError, match=r"\['optim.base_lr'\] set both by the sweep file"):
    _runs(["optim.base_lr=0.2"], sweep_file=str(path))
  with pytest.raises(SweepError, match=r"\['optim.base_lr'\] are swept and also set by"):
    _runs(["optim.base_lr=0.2"], fixed=["optim.base_lr"])
  with pytest.raises(SweepError, match="nothing to sweep"):
    _runs()
  # Values outside a field's allowed set fail for the run that has them, before any run starts.
  with pytest.raises(SweepError, match=r"run optim.name=lamb: config.optim.name='lamb' is not "
                                       r"allowed; choose one of \['sgd', 'lars', 'adamw'\]"):
    command.run_sweep(_config(), config_spec=CONFIG_SPEC, base_overrides={}, main_path=MAIN,
                      sweep_dir=str(tmp_path / "sweep"), sweep_flags=["optim.name=sgd,lamb"],
                      emit="list")
  assert not (tmp_path / "sweep").exists()


def test_run_names_are_readable_unique_and_filesystem_safe(tmp_path):
  assert definition.run_name({"optim.base_lr": 0.003}) == "optim.base_lr=0.003"
  assert definition.run_name({"optim.base_lr": 1e-05, "model.width": 8}) == \
      "optim.base_lr=1e-05,model.width=8"
  assert definition.run_name({"augment.crop_scale": (0.3, 1.0), "eval.at_end": False}) == \
      "augment.crop_scale=0.3_1.0,eval.at_end=false"
  assert definition.run_name({}) == "base"
  # Unsafe characters are replaced, and a hash of the exact values keeps the names apart.
  config = ml_collections.ConfigDict({"name": "x", "tags": ("a",), "lr": 0.1})
  runs = definition.build_runs(config, sweep_flags=[
      "name=a/b,a_b,a b,..,'quoted',/", "tags=('a_b',),('a','b'),('c',)"])
  names = [run.name for run in runs]
  assert len(runs) == 18 and len(set(names)) == 18
  long_runs = definition.build_runs(config, sweep_flags=["name=" + "x" * 300 + ",y"])
  for name in names + [run.name for run in long_runs]:
    assert re.fullmatch(r"[A-Za-z0-9._=,+-]+", name) and name not in (".", "..")
    assert ".." not in name and len(name.encode()) < 200
    os.makedirs(tmp_path / name)    # one path component that the file system takes
  assert len(os.listdir(tmp_path)) == 20
  assert "name=a_b,tags=c" in names   # safe and unambiguous names are left as they are
  # ('a_b',) and ('a', 'b') read alike, and a/b, a_b, 'a b' become alike: all six get a hash.
  assert "name=a_b,tags=a_b" not in names
  assert sum(name.startswith("name=a_b,tags=a_b-") for name in names) == 6


# --- SLURM --------------------------------------------------------------------------------------

def test_slurm_array_maps_every_task_id_to_its_run(tmp_path):
  sweep_dir = tmp_path / "sweep"
  status = command.run_sweep(
      _config(), config_spec=CONFIG_SPEC, base_overrides={"num_steps": 100},
      main_path=MAIN, sweep_dir=str(sweep_dir),
      sweep_flags=["optim.base_lr=1e-3,3e-3,1e-2", "augment.crop_scale=(0.3,1.0),(0.5,1.0)"],
      emit="slurm", sbatch_options=["--gres=gpu:1", "--time=01:00:00"])
  assert status == 0
  script = (sweep_dir / slurm.SCRIPT_FILE).read_text()
  directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
  assert "#SBATCH --array=0-5" in directives
  assert "#SBATCH --gres=gpu:1" in directives and "#SBATCH --time=01:00:00" in directives
  listed = json.loads((sweep_dir / command.RUNS_FILE).read_text())["runs"]
  expected_values = [(lr, crop) for lr in ("0.001", "0.003", "0.01")
                     for crop in ("(0.3,1.0)", "(0.5,1.0)")]

  def task(task_id: int) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHON="echo", SLURM_ARRAY_TASK_ID=str(task_id))
    return subprocess.run(["bash", str(sweep_dir / slurm.SCRIPT_FILE)], env=environment,
                          capture_output=True, text=True, timeout=30)

  for task_id, (lr, crop) in enumerate(expected_values):
    result = task(task_id)
    assert result.returncode == 0, result.stderr
    arguments = result.stdout.split()
    run_dir = str(sweep_dir / listed[task_id]["name"])
    assert arguments == [MAIN, f"--config={CONFIG_SPEC}", "--config.num_steps=100",
                         f"--config.optim.base_lr={lr}", f"--config.augment.crop_scale={crop}",
                         f"--workdir={run_dir}"]
    assert listed[task_id]["overrides"]["optim.base_lr"] == float(lr)
    assert json.loads((sweep_dir / listed[task_id]["name"] / "sweep_status.json").read_text()) \
        == {"returncode": 0}
  result = task(6)
  assert result.returncode == 2 and "this sweep has runs 0-5" in result.stderr
  # A finished run is not run again.
  (sweep_dir / listed[2]["name"] / "summary.json").write_text("{}")
  result = task(2)
  assert result.returncode == 0 and "finished before" in result.stdout
  assert MAIN not in result.stdout


def test_slurm_task_records_the_exit_status_of_a_run_that_ends_at_once(tmp_path):
  """A run can exit before the batch shell first looks at it, and bash may already have reaped
  it then (CI hit this: `returncode: unbound variable`); its status must still be recorded."""
  sweep_dir = tmp_path / "sweep"
  command.run_sweep(_config(), config_spec=CONFIG_SPEC, base_overrides={}, main_path=MAIN,
                    sweep_dir=str(sweep_dir), sweep_flags=["optim.base_lr=1e-3"], emit="slurm")
  # `false` is a shell builtin: the background run ends at once, with status 1. A DEBUG trap
  # (sourced through BASH_ENV) slows the batch shell down so that the run is over and reaped
  # before the shell's next command, as on a loaded machine.
  slow_shell = tmp_path / "slow_shell.sh"
  slow_shell.write_text("trap 'sleep 0.01' DEBUG\n")
  environment = dict(os.environ, PYTHON="false", SLURM_ARRAY_TASK_ID="0",
                     BASH_ENV=str(slow_shell))
  run_dir = sweep_dir / json.loads((sweep_dir / command.RUNS_FILE).read_text())["runs"][0]["name"]
  result = subprocess.run(["bash", str(sweep_dir / slurm.SCRIPT_FILE)], env=environment,
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == 1, result.stderr
  assert json.loads((run_dir / "sweep_status.json").read_text()) == {"returncode": 1}


def test_slurm_task_passes_sigterm_to_the_run_and_requeues_itself(tmp_path):
  """SLURM signals the batch shell (--signal=B:TERM@...); the run must get the SIGTERM, and a
  run that stopped for it (exit 143) is requeued."""
  sweep_dir = tmp_path / "sweep"
  command.run_sweep(_config(), config_spec=CONFIG_SPEC, base_overrides={}, main_path=MAIN,
                    sweep_dir=str(sweep_dir), sweep_flags=["optim.base_lr=1e-3,3e-3"],
                    emit="slurm")
  script = (sweep_dir / slurm.SCRIPT_FILE).read_text()
  assert "#SBATCH --signal=B:TERM@120" in script and "#SBATCH --requeue" in script
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  # A stand-in for python main.py: saves "a checkpoint" on SIGTERM and exits 143, as main.py does.
  (bin_dir / "fake_python").write_text(
      "#!/bin/bash\ntrap 'echo saved > \"$RUN_MARK\"; exit 143' TERM\n"
      "touch \"$RUN_MARK.started\"\nwhile true; do sleep 0.05; done\n")
  (bin_dir / "scontrol").write_text('#!/bin/bash\necho "$@" > "$RUN_MARK.scontrol"\n')
  for tool in bin_dir.iterdir():
    tool.chmod(0o755)
  mark = tmp_path / "mark"
  environment = dict(os.environ, PYTHON=str(bin_dir / "fake_python"), RUN_MARK=str(mark),
                     PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_ARRAY_JOB_ID="77",
                     SLURM_ARRAY_TASK_ID="1")
  process = subprocess.Popen(["bash", str(sweep_dir / slurm.SCRIPT_FILE)], env=environment)
  deadline = time.time() + 20
  while not (tmp_path / "mark.started").exists():
    assert time.time() < deadline and process.poll() is None, "the run never started"
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)   # what SLURM sends the batch shell
  assert process.wait(timeout=20) == 143
  assert mark.read_text().strip() == "saved"
  run_dir = sweep_dir / json.loads((sweep_dir / command.RUNS_FILE).read_text())["runs"][1]["name"]
  assert json.loads((run_dir / "sweep_status.json").read_text()) == {"returncode": 143}
  assert (tmp_path / "mark.scontrol").read_text().split() == ["requeue", "77_1"]


# --- summary ------------------------------------------------------------------------------------

def _write_summary(run_dir, knn, linear, loss, images_per_second):
  os.makedirs(run_dir, exist_ok=True)
  evaluation = {"trained": {"knn_top1": knn, "linear_top1": linear},
                "random_init": {"knn_top1": 0.5, "linear_top1": 0.4}}
  with open(os.path.join(run_dir, "summary.json"), "w") as f:
    json.dump({"config_name": "moco_v2:digits", "objective": "moco_v2", "steps": 10,
               "final_loss": loss, "images_per_second": images_per_second, "wall_time_seconds": 5.0,
               "eval": evaluation, "config": {"optim": {"base_lr": 0.1}}}, f)


def test_summary_sorts_by_the_metric_and_writes_every_metric_to_csv(tmp_path):
  runs = _runs(["optim.base_lr=1e-3,3e-3,1e-2,3e-2,1e-1"])
  sweep_dir = str(tmp_path)
  command.write_runs_file(runs, sweep_dir, config_spec=CONFIG_SPEC, base_flags=[])
  _write_summary(os.path.join(sweep_dir, runs[0].name), 0.80, 0.85, 2.5, 900.0)
  _write_summary(os.path.join(sweep_dir, runs[1].name), 0.95, 0.90, 3.0, 1234.56)
  _write_summary(os.path.join(sweep_dir, runs[2].name), 0.90, math.nan, 2.0, 99.5)
  os.makedirs(os.path.join(sweep_dir, runs[3].name))
  with open(os.path.join(sweep_dir, runs[3].name, "sweep_status.json"), "w") as f:
    json.dump({"returncode": 1}, f)
  # runs[4] never started.

  table = summary.summarize(command.read_runs(sweep_dir), sweep_dir)
  lines = table.splitlines()
  assert "3/5 runs done, sorted by eval.trained.knn_top1 (descending)" in lines[0]
  assert lines[1].split() == ["optim.base_lr", "status", "eval.trained.knn_top1",
                              "eval.trained.linear_top1", "final_loss", "images_per_second",
                              "wall_time_seconds"]
  assert [line.split()[0] for line in lines[3:]] == ["0.003", "0.01", "0.001", "0.03", "0.1"]
  assert lines[3].split() == ["0.003", "done", "0.9500", "0.9000", "3.0000", "1234.6", "5.0"]
  assert lines[6].split()[:4] == ["0.03", "failed", "(exit", "1)"]
  assert lines[7].split()[:2] == ["0.1", "not", ] and "-" in lines[7].split()

  with open(os.path.join(sweep_dir, summary.CSV_FILE)) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["run", "status", "optim.base_lr", "eval.random_init.knn_top1",
                     "eval.random_init.linear_top1", "eval.trained.knn_top1",
                     "eval.trained.linear_top1", "final_loss", "images_per_second", "steps",
                     "wall_time_seconds"]
  assert rows[1] == ["optim.base_lr=0.003", "done", "0.003", "0.5", "0.4", "0.95", "0.9", "3.0",
                     "1234.56", "10.0", "5.0"]
  assert [row[0] for row in rows[1:]] == [runs[i].name for i in (1, 2, 0, 3, 4)]
  assert rows[4][1:3] == ["failed (exit 1)", "0.03"] and set(rows[4][3:]) == {""}

  # Lowest loss first; a NaN metric sorts last among the finished runs.
  rows = summary.collect(runs, sweep_dir, "final_loss", descending=False)
  assert [row["run"] for row in rows[:3]] == [runs[i].name for i in (2, 0, 1)]
  rows = summary.collect(runs, sweep_dir, "eval.trained.linear_top1")
  assert [row["run"] for row in rows[:3]] == [runs[i].name for i in (1, 0, 2)]
  with pytest.raises(SweepError) as error:
    summary.collect(runs, sweep_dir, "eval.trained.knn_top5")
  assert "available: ['eval.random_init.knn_top1'" in str(error.value)
  assert "'wall_time_seconds']" in str(error.value)
  with pytest.raises(SweepError, match="not a summary.json metric; allowed: final_loss"):
    summary.check_metric_name("eval.trained.knn_top5")

  # A directory of hand-made runs (no sweep.json): every subdirectory with a summary.json.
  os.remove(os.path.join(sweep_dir, command.RUNS_FILE))
  assert [run.name for run in command.read_runs(sweep_dir)] == sorted(
      runs[i].name for i in (0, 1, 2))


# --- a real sweep ---------------------------------------------------------------------------------

def test_a_sweep_of_two_tiny_runs_through_main(tmp_path):
  sweep_file = tmp_path / "tiny_sweep.py"
  sweep_file.write_text("def get_sweep():\n  return [{'eval.max_examples': 256}]\n")
  command_line = [
      sys.executable, MAIN, "--mode=sweep",
      "--config=" + os.path.join(REPO, "configs", "moco_v2.py") + ":digits,tiny",
      "--config.num_steps=4", "--config.log_every_steps=2", "--config.model.name=resnet10",
      "--config.model.width=4", "--config.data.image_size=16", "--config.batch_size=32",
      "--config.objective_config.queue_size=256", "--config.eval.evaluators=('knn',)",
      "--config.eval.baselines=('random_init',)", "--config.eval.knn.ks=(20,)",
      "--config.quick_compile=true", "--config.tensorboard=false", f"--sweep_file={sweep_file}",
      # The runs differ only in the data order, so the second reuses the first's compiled
      # programs (the session's compilation cache) and the test stays short. (Crashes, skipping
      # and SIGTERM are tested below with a stand-in for main.py.)
      "--sweep=data.shuffle_seed=0,1", "--workdir=sweep"]
  # Two devices rather than the session's eight: a smaller program to compile.
  environment = environment_with_devices(2)
  result = subprocess.run(command_line, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=environment)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output[-4000:]
  sweep_dir = tmp_path / "sweep"
  names = ["eval.max_examples=256,data.shuffle_seed=0", "eval.max_examples=256,data.shuffle_seed=1"]
  assert sorted(os.listdir(sweep_dir)) == sorted(names + ["sweep.json", summary.CSV_FILE])
  for name, shuffle_seed in zip(names, (0, 1)):
    assert json.loads((sweep_dir / name / "sweep_status.json").read_text())["returncode"] == 0
    run_config = json.loads((sweep_dir / name / "summary.json").read_text())["config"]
    assert run_config["data"]["shuffle_seed"] == shuffle_seed
    assert run_config["eval"]["max_examples"] == 256 and run_config["batch_size"] == 32
    assert run_config["num_steps"] == 4 and run_config["eval"]["knn"]["ks"] == [20]
  with open(sweep_dir / summary.CSV_FILE) as f:
    rows = list(csv.DictReader(f))
  summaries = [json.loads((sweep_dir / name / "summary.json").read_text()) for name in names]
  knn = [run_summary["eval"]["trained"]["knn_top1"] for run_summary in summaries]
  # Best first; on a tie the sweep's order stays.
  assert [row["run"] for row in rows] == [names[i] for i in sorted(range(2), key=lambda i: -knn[i])]
  assert [row["status"] for row in rows] == ["done", "done"]
  assert {row["run"]: float(row["eval.trained.knn_top1"]) for row in rows} == dict(zip(names, knn))
  assert {row["run"]: row["data.shuffle_seed"] for row in rows} == dict(zip(names, "01"))
  assert "2/2 runs done, sorted by eval.trained.knn_top1" in result.stdout

  # The summary alone, sorted by another metric.
  assert command.print_summary(str(sweep_dir), "final_loss", ascending=True) == 0
  losses = [run_summary["final_loss"] for run_summary in summaries]
  with open(sweep_dir / summary.CSV_FILE) as f:
    assert [row["run"] for row in csv.DictReader(f)] == [
        names[i] for i in sorted(range(2), key=lambda i: losses[i])]


# --- the local runner with a stand-in for main.py -------------------------------------------------

FAKE_MAIN = '''
import json, os, signal, sys, time
arguments = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
workdir, lr = arguments["workdir"], float(arguments["config.optim.base_lr"])
print("fake run", lr, arguments["config.num_steps"], flush=True)
if lr == 0.1:
  sys.exit(3)                                   # a crash
if lr == 0.3:                                   # the scheduler stops the sweep mid-run
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  os.kill(os.getppid(), signal.SIGTERM)
  time.sleep(30)
  sys.exit(0)                                   # not reached if SIGTERM was passed on
with open(os.path.join(workdir, "summary.json"), "w") as f:
  json.dump({"final_loss": lr, "eval": {"trained": {"knn_top1": 1 - lr}}}, f)
'''


def test_local_runner_goes_on_after_a_crash_skips_finished_runs_and_stops_on_sigterm(
    tmp_path, capsys):
  fake_main = tmp_path / "fake_main.py"
  fake_main.write_text(FAKE_MAIN)
  sweep_dir = tmp_path / "sweep"
  runs = _runs(["optim.base_lr=0.1,0.2,0.25,0.3,0.4"])
  os.makedirs(sweep_dir / runs[2].name)
  (sweep_dir / runs[2].name / "summary.json").write_text(
      json.dumps({"final_loss": 0.25, "eval": {"trained": {"knn_top1": 0.75}}}))
  handler_before = signal.getsignal(signal.SIGTERM)
  status = local.run_locally(runs, str(sweep_dir), main_path=str(fake_main),
                             config_spec=CONFIG_SPEC, base_flags=["--config.num_steps=7"])
  output = capsys.readouterr().out
  assert status == 143
  assert "fake run 0.1 7" in output and "fake run 0.2 7" in output
  assert "fake run 0.25" not in output and "[sweep 3/5] optim.base_lr=0.25: finished before" in output
  assert "fake run 0.4" not in output and not (sweep_dir / runs[4].name).exists()
  assert "fake run 0.1 7" in (sweep_dir / runs[0].name / local.LOG_FILE).read_text()
  returncodes = [json.loads((sweep_dir / runs[i].name / local.STATUS_FILE).read_text())["returncode"]
                 for i in (0, 1, 3)]
  assert returncodes == [3, 0, 143]
  rows = summary.collect(runs, str(sweep_dir), summary.DEFAULT_METRIC)
  assert [(row["run"], row["status"]) for row in rows] == [
      (runs[1].name, "done"), (runs[2].name, "done"), (runs[0].name, "failed (exit 3)"),
      (runs[3].name, "stopped (resumable)"), (runs[4].name, "not run")]
  assert signal.getsignal(signal.SIGTERM) is handler_before   # the runner restored it


def test_listed_commands_run_in_a_shell_as_printed(tmp_path, capsys):
  """`--sweep_emit=list` prints commands a POSIX shell parses back into the same arguments
  (a tuple value such as (0.2,1.0) unquoted is a bash syntax error)."""
  sweep_dir = tmp_path / "sweep dir"
  command.run_sweep(_config(), config_spec=CONFIG_SPEC, base_overrides={}, main_path=MAIN,
                    sweep_dir=str(sweep_dir),
                    sweep_flags=["augment.crop_scale=(0.2,1.0),(0.5,1.0)"], emit="list")
  lines = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
  assert len(lines) == 2
  for line, crop in zip(lines, ["(0.2,1.0)", "(0.5,1.0)"]):
    text = line.split(": ", 1)[1]
    parsed = subprocess.run(["bash", "-c", 'printf "%s\\n" ' + text], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    assert parsed[0] == "python" and f"--config.augment.crop_scale={crop}" in parsed
    assert any(arg.startswith("--workdir=") and "sweep dir" in arg for arg in parsed)
