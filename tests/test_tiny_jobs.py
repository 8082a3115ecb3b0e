"""The tiny job of every objective, end to end on digits: it learns (kNN clearly above the same
encoder at random init), writes what it promises, and its exported encoder reloads exactly.

Each objective's `digits,tiny` config runs here in full (train, kNN, export, summary.json), which
is also the "every config runs" check. The default objective runs on a 2-device mesh with the
linear probe; the others run on one device with kNN only, to keep the suite within its budget
(8-vs-1-device agreement of every objective is tested in test_sharded_vs_single.py). Two devices
rather than all 8: at this size a step on the 8 forced devices of 2 cores took 293 ms against
108 ms on 2 (and 93 ms on 1), measured for MoCo v2's tiny step when it was a ResNet-18.
"""

import csv
import importlib
import json
import os

import jax
import numpy as np
import pytest

import ssl_jax
from engine_helpers import max_abs_difference
from ssl_jax import checkpointing, run_records, train
from ssl_jax.evaluation import runner
from ssl_jax.evaluation.evaluators import EVALUATORS
from ssl_jax.objectives import OBJECTIVES

DEFAULT_OBJECTIVE = "moco_v2"
# What the trained encoder must gain over the same weights at random init (with BatchNorm
# statistics measured on the training images, like the trained encoder's), on the 450 test digits.
MIN_KNN_GAIN = 0.03
MIN_LINEAR_GAIN = 0.05
# bfloat16 compute may lose this much top-1 against float32 on the same tiny job. Rounding alone
# moves these figures by about as much: on an AVX-512 Xeon, the float32 job's linear top-1 was
# 0.942-0.964 under four compile settings (the session's, XLA level 3, the MLIR fusion emitters,
# 1 device), and bfloat16's 0.922-0.947, 0.005-0.020 below float32's in each setting (kNN: 0.949-
# 0.962 against 0.953-0.967). On an AMD EPYC, with the earlier ResNet-18 tiny job, bfloat16 had
# come out ahead (linear 0.938 against 0.929 on 2 devices, one run each). So the bar is twice
# the largest shortfall seen, not the shortfall itself.
MAX_BFLOAT16_SHORTFALL = 0.04


# Each objective's tests share one tiny run, cached per process: under `pytest -n` the xdist group
# sends all of an objective's tests to one worker, which may interleave them with other groups'
# (a module-scoped parametrised fixture would then be torn down and rerun).
TINY_RUNS = pytest.mark.parametrize(
    "objective", [pytest.param(name, marks=pytest.mark.xdist_group(f"tiny_{name}"))
                  for name in sorted(OBJECTIVES)])
_RUNS: dict[str, tuple] = {}


@pytest.fixture
def tiny_run(objective, tmp_path_factory):
  if objective not in _RUNS:
    _RUNS[objective] = _run_tiny_job(objective, tmp_path_factory)
  return _RUNS[objective]


def _tiny_devices(objective):
  return jax.devices()[:2 if objective == DEFAULT_OBJECTIVE else 1]


def _run_tiny_job(objective, tmp_path_factory):
  config = importlib.import_module(f"configs.{objective}").get_config("digits,tiny")
  if objective != DEFAULT_OBJECTIVE:
    config.eval.evaluators = ("knn",)
  workdir = str(tmp_path_factory.mktemp(f"tiny_{objective}"))
  summary = train.train_and_evaluate(config, workdir, show_progress=False,
                                     devices=_tiny_devices(objective))
  return objective, config, workdir, summary


@TINY_RUNS
def test_tiny_job_learns_beyond_random_init(tiny_run):
  objective, _, _, summary = tiny_run
  trained = summary["eval"]["trained"]
  random_weights = summary["eval"]["random_init_data_bn"]
  assert trained["knn_top1"] >= random_weights["knn_top1"] + MIN_KNN_GAIN, (
      objective, trained, random_weights)
  if objective == DEFAULT_OBJECTIVE:
    assert trained["linear_top1"] >= random_weights["linear_top1"] + MIN_LINEAR_GAIN
    # MoCo also beats the literal initial encoder, whose identity BatchNorms make it an
    # unnormalised random conv net that is unusually good on digits (0.90 kNN).
    assert trained["knn_top1"] >= summary["eval"]["random_init"]["knn_top1"] + MIN_KNN_GAIN


@pytest.mark.xdist_group(f"tiny_{DEFAULT_OBJECTIVE}")
@pytest.mark.parametrize("objective", [DEFAULT_OBJECTIVE])
def test_bfloat16_compute_trains_as_well_as_float32(tiny_run, tmp_path_factory):
  """model.dtype='bfloat16' (params, optimiser state, BN statistics and the loss stay float32)
  learns as much as the float32 run of the same tiny job on the same devices."""
  objective, float32_config, _, float32_summary = tiny_run
  config = float32_config.copy_and_resolve_references()
  config.model.dtype = "bfloat16"
  workdir = str(tmp_path_factory.mktemp(f"tiny_{objective}_bfloat16"))
  summary = train.train_and_evaluate(config, workdir, show_progress=False,
                                     devices=_tiny_devices(objective))
  bfloat16, float32 = summary["eval"]["trained"], float32_summary["eval"]["trained"]
  assert bfloat16["knn_top1"] >= float32["knn_top1"] - MAX_BFLOAT16_SHORTFALL, (bfloat16, float32)
  assert bfloat16["linear_top1"] >= float32["linear_top1"] - MAX_BFLOAT16_SHORTFALL, (
      bfloat16, float32)
  assert bfloat16["knn_top1"] >= summary["eval"]["random_init_data_bn"]["knn_top1"] + MIN_KNN_GAIN


@pytest.mark.xdist_group(f"tiny_{DEFAULT_OBJECTIVE}")
@pytest.mark.parametrize("objective", [DEFAULT_OBJECTIVE])
def test_every_evaluation_runs_on_the_pretrained_tiny_encoder(tiny_run, tmp_path):
  """Pretrain (the tiny job), export, then every evaluation of configs/eval/ in its tiny setting
  on the exported encoder, as `python main.py --mode=eval` runs them."""
  _, _, workdir, _ = tiny_run
  for name in sorted(EVALUATORS):
    config = importlib.import_module(f"configs.eval.{name}").get_config("digits,tiny")
    config.encoder = os.path.join(workdir, "encoder")
    # The baselines multiply the work; the linear probe keeps them, as evidence.
    if name != "linear":
      config.eval.baselines = ()
    out = tmp_path / name
    summary = runner.run_evaluation(config, str(out), print_table=False)
    written = json.loads((out / "results.json").read_text())["evaluations"][name]
    assert list(written["results"]) == ["encoder"] + list(config.eval.baselines), name
    assert written["plots"] and all((out / plot).stat().st_size > 1000
                                    for plot in written["plots"]), name
    if name == "linear":
      results = summary["evaluations"]["linear"]["results"]
      for baseline in ("random_init", "random_init_data_bn"):
        assert results["encoder"]["top1"] > results[baseline]["top1"], (baseline, results)


@pytest.mark.xdist_group(f"tiny_{DEFAULT_OBJECTIVE}")
@pytest.mark.parametrize("objective", [DEFAULT_OBJECTIVE])
def test_mode_eval_gives_the_end_of_training_numbers(tiny_run, tmp_path, capsys):
  """The exported encoder evaluated by `--mode=eval` (the kNN and linear configs, on the same
  devices and cap) gets exactly the numbers summary.json holds, for it and every baseline."""
  _, train_config, workdir, summary = tiny_run
  reports = {}
  for name in ("knn", "linear"):
    config = importlib.import_module(f"configs.eval.{name}").get_config("digits,tiny")
    config.encoder = os.path.join(workdir, "encoder")
    config.eval.max_examples = train_config.eval.max_examples
    reports[name] = runner.run_evaluation(config, str(tmp_path / name), print_table=False,
                                          devices=_tiny_devices(DEFAULT_OBJECTIVE))
    # Each evaluator says what it starts on and when it is done (a fine-tune takes minutes).
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"evaluation: {name} on encoder, {', '.join(config.eval.baselines)} ..."
    assert lines[1].startswith(f"evaluation: {name} done in ") and lines[1].endswith(" s")
  assert tuple(config.eval.baselines) == tuple(train_config.eval.baselines)
  for encoder, eval_name in [("trained", "encoder")] + [(b, b) for b in config.eval.baselines]:
    knn = reports["knn"]["evaluations"]["knn"]["results"][eval_name]
    linear = reports["linear"]["evaluations"]["linear"]["results"][eval_name]
    expected = summary["eval"][encoder]
    assert {k: knn[f"top1_k{k}"] for k in (20, 200)} == {
        k: expected[f"knn_top1_k{k}"] for k in (20, 200)}, encoder
    assert (linear["top1"], linear["l2"]) == (expected["linear_top1"], expected["linear_l2"]), (
        encoder)


@TINY_RUNS
def test_tiny_job_writes_summary_events_checkpoints_and_encoder(tiny_run):
  objective, config, workdir, summary = tiny_run
  on_disk = json.load(open(os.path.join(workdir, "summary.json")))
  assert on_disk["config_name"] == config.name == f"{objective}:digits,tiny"
  assert on_disk["steps"] == config.num_steps
  assert np.isfinite(on_disk["final_loss"]) and on_disk["images_per_second"] > 0
  assert on_disk["wall_time_seconds"] > 0
  assert on_disk["eval_splits"] == {"train": "all 1,347", "test": "all 450"}
  metrics = ("knn_top1", "knn_top1_k20", "knn_top1_k200")
  if "linear" in config.eval.evaluators:
    metrics += ("linear_top1",)
  for encoder in ("trained", "random_init", "random_init_data_bn", "pixels"):
    for key in metrics:
      assert 0.0 <= on_disk["eval"][encoder][key] <= 1.0
  _assert_tensorboard_holds_the_metrics(workdir)
  # The end-of-training tables as files: summary.json's `eval` section, every scalar of it.
  with open(os.path.join(workdir, "eval", "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert {row.pop("encoder"): {k: float(v) for k, v in row.items() if v}
          for row in rows} == on_disk["eval"]
  assert os.path.exists(os.path.join(workdir, "eval", "results.tex"))
  assert str(config.num_steps) in os.listdir(os.path.join(workdir, "checkpoints"))
  assert os.path.exists(os.path.join(workdir, "encoder", "encoder.json"))


def _assert_tensorboard_holds_the_metrics(workdir):
  """TensorBoard's own reader finds, in the events written without TensorFlow, every logged
  loss of metrics.jsonl at its step (float32 in the event), and the config in the Text tab."""
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  events.Reload()
  logged = [record for record in run_records.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if "loss" in record]
  assert logged
  losses = {event.step: event.value for event in events.Scalars("loss")}
  assert losses == pytest.approx({record["step"]: record["loss"] for record in logged}, rel=1e-6)
  assert "config/text_summary" in events.Tags()["tensors"]


def _trained_state(config, workdir):
  experiment = train.Experiment(config)
  checkpointer = checkpointing.TrainCheckpointer(os.path.join(workdir, "checkpoints"),
                                                 max_to_keep=1)
  state = checkpointer.restore(config.num_steps, experiment.abstract_state)
  checkpointer.close()
  return experiment, state


@TINY_RUNS
def test_exported_encoder_holds_the_trained_backbone_exactly(tiny_run):
  """Every objective exports its online backbone's final weights and BN statistics, bit for bit.
  (Compared as variables, which needs no compilation; the features the reloaded encoder computes
  are compared once, for the default objective, below.)"""
  _, config, workdir, _ = tiny_run
  experiment, state = _trained_state(config, workdir)
  loaded = ssl_jax.load_encoder(os.path.join(workdir, "encoder"))
  assert loaded.image_size == config.data.image_size
  # Structure and values: jax.tree.map fails on a missing or extra leaf.
  assert max_abs_difference(jax.device_get(loaded.variables),
                            jax.device_get(experiment.encoder_variables(state))) == 0


@pytest.mark.xdist_group(f"tiny_{DEFAULT_OBJECTIVE}")
@pytest.mark.parametrize("objective", [DEFAULT_OBJECTIVE])
def test_exported_encoder_reproduces_the_trained_encoder_exactly(tiny_run):
  """The reloaded encoder computes exactly the in-memory encoder's pooled and stage features."""
  _, config, workdir, _ = tiny_run
  experiment, state = _trained_state(config, workdir)
  in_memory = experiment.encoder(state.params, state.batch_stats)
  loaded = ssl_jax.load_encoder(os.path.join(workdir, "encoder"))
  images = np.random.default_rng(0).integers(0, 256, (16, loaded.image_size,
                                                      loaded.image_size, 3), dtype=np.uint8)
  expected, got = in_memory(images), loaded(images)
  np.testing.assert_array_equal(np.asarray(expected["pooled"]), np.asarray(got["pooled"]))
  for stage_expected, stage_got in zip(expected["stages"], got["stages"]):
    np.testing.assert_array_equal(np.asarray(stage_expected), np.asarray(stage_got))


def test_load_encoder_names_a_missing_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="not an exported encoder"):
    ssl_jax.load_encoder(str(tmp_path))


@TINY_RUNS
def test_export_mode_rewrites_the_encoder_from_the_latest_checkpoint(tiny_run):
  _, config, workdir, _ = tiny_run
  encoder_dir = os.path.join(workdir, "encoder")
  before = jax.device_get(ssl_jax.load_encoder(encoder_dir).variables)
  os.rename(encoder_dir, encoder_dir + ".old")
  assert train.export_latest_checkpoint(config, workdir) == encoder_dir
  assert max_abs_difference(before,
                            jax.device_get(ssl_jax.load_encoder(encoder_dir).variables)) == 0
