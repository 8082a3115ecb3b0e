"""Fault injection around a run's state: nothing a crash, a second process, a damaged file or a
foreign workdir does may lose a run or its records (issue 30).

Two small MoCo v2 runs are shared by the module: one uninterrupted (12 steps, a checkpoint every
4), one stopped at step 8; each test copies what it damages.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import dataset_files
from engine_helpers import small_config
from input_pipeline import csv_source, folder_source
from ssl_jax import (checkpointing, disk_space, export, run_records, train, workdir_config,
                     workdir_owner)

pytestmark = pytest.mark.xdist_group("run_safety")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 12
STOP_AT = 8


def _config(**overrides):
  settings = dict(num_steps=TOTAL_STEPS, checkpoint_every_steps=4, log_every_steps=4,
                  keep_checkpoints=5, tensorboard=False)
  return small_config("moco_v2", **{**settings, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("runs")
  finished, stopped = str(base / "finished"), str(base / "stopped")
  train.train_and_evaluate(_config(), finished, show_progress=False)
  with pytest.raises(train.Preempted):
    train.train_and_evaluate(_config(), stopped, stop_at_step=STOP_AT, show_progress=False)
  return {"finished": finished, "stopped": stopped}


def _copy(source: str, tmp_path) -> str:
  target = str(tmp_path / os.path.basename(source))
  shutil.copytree(source, target)
  return target


def _strict_json(path: str):
  def refuse(constant):
    raise AssertionError(f"{path} holds {constant}, which is not JSON")
  with open(path) as f:
    return json.load(f, parse_constant=refuse)


def _final_params(workdir: str):
  experiment = train.Experiment(_config())
  checkpointer = checkpointing.TrainCheckpointer(
      os.path.join(workdir, train.CHECKPOINT_DIR), max_to_keep=10)
  state = checkpointer.restore(checkpointer.latest_step(), experiment.abstract_state)
  checkpointer.close()
  return jax.device_get(state)


def _assert_bitwise_equal(tree_a, tree_b):
  leaves_a, leaves_b = jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)
  assert len(leaves_a) == len(leaves_b)
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# 1. Relaunching a finished run ---------------------------------------------------------------

def test_relaunching_a_finished_run_writes_the_same_summary(runs, tmp_path):
  workdir = _copy(runs["finished"], tmp_path)
  first = _strict_json(os.path.join(workdir, train.SUMMARY_FILE))
  records = run_records.read_jsonl(os.path.join(workdir, run_records.METRICS_FILE))
  # The figures are the records': the loss of the last one, images over timed seconds.
  assert first["final_loss"] == records[-1]["loss"] and records[-1]["step"] == TOTAL_STEPS
  timed = [r for r in records if r[run_records.TIMED_SECONDS] > 0]
  assert len(timed) == 2   # the first interval (compilation) does not count
  assert first["images_per_second"] == pytest.approx(
      8 * 32 / sum(r[run_records.TIMED_SECONDS] for r in timed))

  # The README's advice after any stop: run the same command again. A run killed during its
  # final evaluation is in the same state (checkpoint at the last step, summary not written).
  os.remove(os.path.join(workdir, train.SUMMARY_FILE))
  train.train_and_evaluate(_config(), workdir, show_progress=False)
  again = _strict_json(os.path.join(workdir, train.SUMMARY_FILE))
  for key in ("final_loss", "images_per_second", "steps", "config"):
    assert again[key] == first[key], key
  assert run_records.read_jsonl(os.path.join(workdir, run_records.METRICS_FILE)) == records


def test_summary_of_a_run_without_records_is_strict_json(tmp_path):
  path = str(tmp_path / "summary.json")
  run_records.write_json_atomically(path, {"final_loss": float("nan"), "x": [float("inf"), 1.0]})
  assert _strict_json(path) == {"final_loss": None, "x": [None, 1.0]}
  assert run_records.training_figures([], 32, 12) == {"final_loss": None,
                                                      "images_per_second": None}


# 2. One owner per workdir --------------------------------------------------------------------

_HOLD_SCRIPT = """
import sys, time
from ssl_jax import workdir_owner
with workdir_owner.own(sys.argv[1]):
  print("held", flush=True)
  time.sleep(600)
"""


def test_a_second_run_on_a_busy_workdir_refuses_and_a_killed_owner_does_not_block(runs,
                                                                                   tmp_path):
  workdir = _copy(runs["stopped"], tmp_path)
  metrics = os.path.join(workdir, run_records.METRICS_FILE)
  records_before = open(metrics).read()
  owner = subprocess.Popen([sys.executable, "-c", _HOLD_SCRIPT, workdir], cwd=REPO,
                           stdout=subprocess.PIPE, text=True)
  try:
    assert owner.stdout.readline().strip() == "held"
    with pytest.raises(workdir_owner.WorkdirBusy, match=f"pid {owner.pid} on host"):
      train.train_and_evaluate(_config(), workdir, show_progress=False)
    assert open(metrics).read() == records_before   # the refused run touched nothing
    with pytest.raises(workdir_owner.WorkdirBusy):
      train.export_latest_checkpoint(_config(), workdir)
  finally:
    owner.send_signal(signal.SIGKILL)
    owner.wait()
  # The killed owner's lock file is still there, with its name in it: it must not block.
  assert str(owner.pid) in open(os.path.join(workdir, workdir_owner.OWNER_FILE)).read()
  summary = train.train_and_evaluate(_config(), workdir, show_progress=False)
  assert summary["steps"] == TOTAL_STEPS
  steps = [r["step"] for r in run_records.read_jsonl(metrics)]
  assert steps == [4, 8, 12]


# 3. Torn records -----------------------------------------------------------------------------

def test_a_torn_metrics_line_is_repaired_on_resume(runs, tmp_path, capsys):
  workdir = _copy(runs["stopped"], tmp_path)
  metrics = os.path.join(workdir, run_records.METRICS_FILE)
  with open(metrics, "a") as f:
    f.write('{"step": 12, "loss": 5.4')   # what a kill mid-write leaves
  assert [r["step"] for r in run_records.read_jsonl(metrics)] == [4, 8]   # plots still read it
  train.train_and_evaluate(_config(), workdir, show_progress=False)
  assert "dropped a torn last line of 24 bytes" in capsys.readouterr().out
  resumed = run_records.read_jsonl(metrics)
  finished = run_records.read_jsonl(os.path.join(runs["finished"], run_records.METRICS_FILE))
  assert [(r["step"], r["loss"]) for r in resumed] == [(r["step"], r["loss"]) for r in finished]


def test_a_last_record_without_its_newline_does_not_fuse_with_the_next(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  with open(path, "w") as f:
    f.write('{"step": 4, "loss": 1.0}\n{"step": 8, "loss": 0.5}')   # cut just before "\n"
  history = run_records.JsonlHistory(path, enabled=True)
  history.truncate_after(8)
  history.append(12, {"loss": 0.25})
  assert run_records.read_jsonl(path) == [{"step": 4, "loss": 1.0}, {"step": 8, "loss": 0.5},
                                          {"step": 12, "loss": 0.25}]


def test_damage_before_the_last_line_is_named_not_papered_over(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  with open(path, "w") as f:
    f.write('{"step": 4, "loss": 1.0}\n{"step": 8, "lo\n{"step": 12, "loss": 0.5}\n')
  with pytest.raises(run_records.RecordError, match=r"metrics.jsonl, line 2"):
    run_records.read_jsonl(path)


def test_rewriting_records_replaces_the_file_whole(tmp_path, monkeypatch):
  path = str(tmp_path / "metrics.jsonl")
  history = run_records.JsonlHistory(path, enabled=True)
  for step in (4, 8, 12):
    history.append(step, {"loss": float(step)})
  original = open(path).read()

  def interrupted_replace(source, target):
    raise KeyboardInterrupt   # a kill between writing the new file and renaming it
  monkeypatch.setattr(os, "replace", interrupted_replace)
  with pytest.raises(KeyboardInterrupt):
    history.truncate_after(4)
  assert open(path).read() == original   # the old file is whole
  assert os.listdir(tmp_path) == ["metrics.jsonl"]   # and no temporary is left behind


# 4. A damaged latest checkpoint --------------------------------------------------------------

def _largest_file(directory: str) -> str:
  files = [os.path.join(d, name) for d, _, names in os.walk(directory) for name in names]
  return max(files, key=os.path.getsize)


def _truncate_data_file(directory):
  path = _largest_file(directory)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _delete_manifest(step_dir):
  os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))


def _empty_step_directory(step_dir):
  for name in os.listdir(step_dir):
    path = os.path.join(step_dir, name)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _delete_iterator_state(step_dir):
  os.remove(os.path.join(step_dir, "data_iter", "process_0-of-1.json"))


DAMAGES = {"truncated data file": lambda step_dir: _truncate_data_file(
               os.path.join(step_dir, "state")),
           "missing manifest": _delete_manifest,
           "emptied step directory": _empty_step_directory,
           "missing iterator file": _delete_iterator_state}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_falls_back_to_the_newest_checkpoint_that_restores(runs, tmp_path, damage):
  workdir = _copy(runs["stopped"], tmp_path)
  checkpoints = os.path.join(workdir, train.CHECKPOINT_DIR)
  DAMAGES[damage](os.path.join(checkpoints, str(STOP_AT)))
  experiment = train.Experiment(_config(), workdir)
  checkpointer = experiment.checkpointer()
  iterator = iter(experiment.train_dataset())
  set_aside = os.path.join(workdir, checkpointing.SET_ASIDE_DIR)
  step, state = checkpointer.restore_newest_good(experiment.abstract_sharded_state(), iterator,
                                                 set_aside)
  checkpointer.close()
  assert step == 4 and int(state.step) == 4
  # The iterator is where the good checkpoint left it: 4 batches in.
  fresh = iter(experiment.train_dataset())
  for _ in range(4):
    next(fresh)
  assert iterator.get_state() == fresh.get_state()
  # The damaged checkpoint is kept, aside, never deleted.
  assert sorted(os.listdir(checkpoints)) == ["4"]
  (moved,) = os.listdir(set_aside)
  assert moved.startswith(f"{STOP_AT}-")


def test_a_resume_past_a_damaged_checkpoint_ends_bitwise_equal_to_an_uninterrupted_run(
    runs, tmp_path, capsys):
  workdir = _copy(runs["stopped"], tmp_path)
  _truncate_data_file(os.path.join(workdir, train.CHECKPOINT_DIR, str(STOP_AT), "state"))
  train.train_and_evaluate(_config(), workdir, show_progress=False)
  assert f"skipped the checkpoint at step {STOP_AT}" in capsys.readouterr().out
  _assert_bitwise_equal(_final_params(workdir), _final_params(runs["finished"]))
  records = run_records.read_jsonl(os.path.join(workdir, run_records.METRICS_FILE))
  assert [r["step"] for r in records] == [4, 8, 12]


def test_when_no_checkpoint_restores_nothing_is_moved_and_each_reason_is_named(runs, tmp_path):
  workdir = _copy(runs["stopped"], tmp_path)
  checkpoints = os.path.join(workdir, train.CHECKPOINT_DIR)
  for step in (4, STOP_AT):
    _delete_manifest(os.path.join(checkpoints, str(step)))
  with pytest.raises(checkpointing.NoUsableCheckpoint, match=r"step 8: .*; step 4: "):
    train.train_and_evaluate(_config(), workdir, show_progress=False)
  assert sorted(os.listdir(checkpoints)) == ["4", "8"]
  assert not os.path.exists(os.path.join(workdir, checkpointing.SET_ASIDE_DIR))


# 5. A workdir holding another run ------------------------------------------------------------

def test_a_workdir_of_another_run_is_refused_naming_the_fields(runs, tmp_path):
  workdir = _copy(runs["stopped"], tmp_path)
  other = _config(batch_size=16)
  other.objective_config.temperature = 0.5
  with pytest.raises(workdir_config.ForeignWorkdir) as refused:
    train.train_and_evaluate(other, workdir, show_progress=False)
  message = str(refused.value)
  assert "2 field(s)" in message
  assert "batch_size: 32 in the workdir, 16 requested" in message
  assert "objective_config.temperature" in message
  # What a resume may change (how long, how often, where the data lies) passes the check.
  longer = _config(num_steps=16, log_every_steps=2, knn_every_steps=0)
  longer.eval.at_end = True
  workdir_config.check_same_run(longer, workdir)


def test_a_foreign_workdir_through_main_is_one_line_exit_2(runs, tmp_path):
  workdir = _copy(runs["stopped"], tmp_path)
  # The stored config is of a tiny digits run; the default job's config differs in many fields.
  result = subprocess.run([sys.executable, "main.py", f"--workdir={workdir}",
                           "--config.tensorboard=False"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "holds checkpoints of another run" in errors[0]
  assert "Traceback" not in result.stderr


# 7. A full disk ------------------------------------------------------------------------------

_FULL_DISK_SCRIPT = """
set -u
mount -t tmpfs -o size=64m tmpfs "$MOUNT"
cp -r "$WORKDIR" "$MOUNT/run"
# Leave FREE bytes: less than one more checkpoint.
available=$(df --output=avail -B1 "$MOUNT" | tail -1)
dd if=/dev/zero of="$MOUNT/filler" bs=4096 count=$(( (available - FREE) / 4096 )) 2> /dev/null
"$PYTHON" main.py --config=configs/moco_v2.py:digits,tiny --workdir="$MOUNT/run" \
  --config.tensorboard=False --config.model.name=resnet10 --config.model.width=4 \
  --config.data.image_size=16 --config.batch_size=32 --config.num_steps=12 \
  --config.eval.at_end=False --config.quick_compile=True --config.log_every_steps=4 \
  --config.checkpoint_every_steps=4 --config.keep_checkpoints=5 \
  --config.objective_config.queue_size=256 > "$OUT/stdout" 2> "$OUT/stderr"
echo $? > "$OUT/rc"
cp -r "$MOUNT/run" "$OUT/run"
"""


def test_a_full_disk_is_one_line_and_the_committed_checkpoints_resume(runs, tmp_path):
  """A real ENOSPC: the run's workdir on a tmpfs too small for one more checkpoint (in a private
  mount namespace, `unshare -rm`, so no privileges or cleanup are needed)."""
  workdir = _copy(runs["stopped"], tmp_path)
  (tmp_path / "mount").mkdir()
  (tmp_path / "out").mkdir()
  # Half the newest checkpoint's size (checkpoints of one run differ in size: orbax's OCDBT
  # files are laid out differently from save to save).
  checkpoint_bytes = disk_space.newest_checkpoint_bytes(
      os.path.join(workdir, train.CHECKPOINT_DIR))
  environment = dict(os.environ, FREE=str(checkpoint_bytes // 2),
                     MOUNT=str(tmp_path / "mount"), WORKDIR=workdir, OUT=str(tmp_path / "out"),
                     PYTHON=sys.executable)
  subprocess.run(["unshare", "-rm", "bash", "-c", _FULL_DISK_SCRIPT], cwd=REPO, env=environment,
                 check=True, timeout=600)
  out = tmp_path / "out"
  stderr = (out / "stderr").read_text()
  assert (out / "rc").read_text().strip() == "1", stderr[-3000:]
  assert stderr.count("error: ") == 1, stderr[-3000:]   # (after the progress bar's last line)
  error = stderr.split("error: ")[1].splitlines()[0]
  assert error.startswith(f"the disk holding {tmp_path / 'mount' / 'run'}")
  assert f"the checkpoint at step {TOTAL_STEPS} needs" in error and "bytes free" in error
  assert "Traceback" not in stderr
  # With space again, the same run resumes from what the full disk left and ends where an
  # uninterrupted run ends.
  train.train_and_evaluate(_config(), str(out / "run"), show_progress=False)
  _assert_bitwise_equal(_final_params(str(out / "run")), _final_params(runs["finished"]))


def test_an_enospc_raised_anywhere_becomes_the_same_line(tmp_path):
  """A disk that fills between the check and the write: a real ENOSPC (from /dev/full), as a
  library wraps it, keeping only its text."""
  try:
    with open("/dev/full", "w") as f:
      f.write("x")
  except OSError as error:
    enospc = error
  try:
    try:
      raise enospc
    except OSError as inner:
      raise ValueError(f"RESOURCE_EXHAUSTED: Failed writing: {inner.strerror}") from None
  except ValueError as wrapped:
    message = disk_space.full_disk_message(wrapped, str(tmp_path), "checkpoints")
  assert message.startswith(f"the disk holding {tmp_path} is full (")
  assert "no checkpoint was committed yet" in message
  assert disk_space.full_disk_message(ValueError("shape mismatch"), str(tmp_path), "x") is None


# 6. Encoder directories are checked before they are trusted ----------------------------------

def _edit_description(encoder_dir: str, edit) -> None:
  path = os.path.join(encoder_dir, export.ENCODER_FILE)
  with open(path) as f:
    description = json.load(f)
  edit(description)
  with open(path, "w") as f:
    json.dump(description, f)


def _set(*keys_and_value):
  *keys, value = keys_and_value

  def edit(description):
    target = description
    for key in keys[:-1]:
      target = target[key]
    target[keys[-1]] = value
  return edit


ENCODER_DAMAGES = {
    "zero std": (_set("std", [0, 0, 0]),
                 r"encoder.json: std must be a list of 3 finite positive"),
    "nan mean": (_set("mean", [0.1, float("nan"), 0.1]), r"encoder.json: mean must be"),
    "unknown backbone": (_set("model", "name", "resnet99"),
                         r"encoder.json: model.name is 'resnet99'"),
    "wider model": (_set("model", "width", 8), r"variables does not hold the variables of the "
                    r"declared model .*shape differs: .* \(4,\) \(expected \(8,\)\)"),
    "deeper model": (_set("model", "name", "resnet18"),
                     r"missing: \['batch_stats'\]\['stage1_block1'\]"),
    "other stem": (_set("model", "stem", "imagenet"),
                   r"shape differs: \['params'\]\['stem_conv'\]"),
    "no model": (lambda description: description.pop("model"), r"encoder.json: 'model' must be an "
                 r"object"),
    "fractional size": (_set("image_size", 16.5), r"encoder.json: image_size must be a positive "
                        r"integer, got 16.5"),
}


@pytest.mark.parametrize("damage", list(ENCODER_DAMAGES))
def test_load_encoder_names_the_file_and_field_of_a_bad_description(runs, tmp_path, damage):
  encoder_dir = _copy(os.path.join(runs["finished"], train.ENCODER_DIR), tmp_path)
  export.load_encoder(encoder_dir)   # intact, it loads
  edit, message = ENCODER_DAMAGES[damage]
  _edit_description(encoder_dir, edit)
  with pytest.raises(export.InvalidEncoder, match=message):
    export.load_encoder(encoder_dir)


def test_load_encoder_names_malformed_json_and_unreadable_variables(runs, tmp_path):
  encoder_dir = _copy(os.path.join(runs["finished"], train.ENCODER_DIR), tmp_path)
  description = os.path.join(encoder_dir, export.ENCODER_FILE)
  original = open(description).read()
  with open(description, "w") as f:
    f.write(original[: len(original) // 2])
  with pytest.raises(export.InvalidEncoder, match=f"{description} is not valid JSON"):
    export.load_encoder(encoder_dir)
  with open(description, "w") as f:
    f.write(original)
  _truncate_data_file(encoder_dir)   # the largest file of the variables
  with pytest.raises(export.InvalidEncoder, match=r"variables cannot be read .*re-export"):
    export.load_encoder(encoder_dir)


def test_a_bad_encoder_through_main_is_one_line_exit_2(runs, tmp_path):
  encoder_dir = _copy(os.path.join(runs["finished"], train.ENCODER_DIR), tmp_path)
  _edit_description(encoder_dir, _set("std", [0, 0, 0]))
  result = subprocess.run([sys.executable, "main.py", "--mode=eval",
                           "--config=configs/eval/linear.py:digits",
                           f"--config.encoder={encoder_dir}", f"--workdir={tmp_path / 'eval'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [
      f"error: {encoder_dir}/encoder.json: std must be a list of 3 finite positive numbers (one "
      "per RGB channel), got [0, 0, 0]"]


# 8. Dataset walks ----------------------------------------------------------------------------

def test_a_directory_link_loop_lists_each_image_once(tmp_path):
  root = str(tmp_path / "images")
  dataset_files.image_folder(root, splits=("train",), classes=("cat", "dog"), per_class=4)
  cat = os.path.join(root, "train", "cat")
  os.makedirs(os.path.join(cat, "more"))
  dataset_files.write_image(os.path.join(cat, "more", "extra.png"),
                            dataset_files.random_image(np.random.default_rng(0)))
  os.symlink(cat, os.path.join(cat, "more", "loop"))       # a cycle back up the tree
  os.symlink(os.path.join(cat, "more"), os.path.join(cat, "again"))   # a second way in
  source = folder_source.folder_source(root, "train", train_split="train")
  paths = [source.path(i) for i in range(len(source))]
  assert len(paths) == 9 and len({os.path.realpath(p) for p in paths}) == 9
  assert sum("extra.png" in p for p in paths) == 1


def test_csv_paths_outside_the_root_are_refused_unless_allowed(tmp_path):
  outside = str(tmp_path / "secret.png")
  dataset_files.write_image(outside, dataset_files.random_image(np.random.default_rng(0)))
  root = tmp_path / "data"
  (root / "img").mkdir(parents=True)
  for index in range(2):
    dataset_files.write_image(str(root / "img" / f"{index}.png"),
                              dataset_files.random_image(np.random.default_rng(index)))
  for listed in ("../secret.png", outside):
    (root / "labels.csv").write_text(f"path,label\nimg/0.png,0\nimg/1.png,1\n{listed},1\n")
    arguments = (str(root), "labels.csv", "path", "label", "")
    csv_source.read_labelled_csv.cache_clear()
    with pytest.raises(ValueError, match=r"1 of the images listed in .*labels.csv lie outside "
                                         r"data.root=.*allow_outside_root=True"):
      csv_source.read_labelled_csv(*arguments)
    files = csv_source.read_labelled_csv(*arguments, allow_outside_root=True)
    assert files.relative_paths[-1] == listed
