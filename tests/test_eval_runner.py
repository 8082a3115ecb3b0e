"""The evaluators end to end: each runs on an exported encoder through the same entry point as
`python main.py --mode=eval`, writes results.json and its plots, and the CLI reports bad input
clearly."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import ssl_jax
from configs import common
from engine_helpers import apply_overrides
from ssl_jax import config_validation, export
from ssl_jax.evaluation import baselines, features, runner
from ssl_jax.evaluation.evaluators import EVALUATORS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_CONFIGS = os.path.join(REPO, "configs", "eval")


def _eval_config(name, **overrides):
  import importlib
  config = importlib.import_module(f"configs.eval.{name}").get_config("digits,tiny")
  return apply_overrides(config, overrides)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
  """A freshly initialised small encoder, exported the way a run exports its encoder."""
  model_config = ml_collections.ConfigDict(dict(name="resnet10", stem="cifar", width=4,
                                                dtype="float32"))
  template = export.Encoder(model_config, None, 16, common.DIGITS_MEAN, common.DIGITS_STD, {})
  variables = baselines.random_init_encoder(template, seed=1).variables
  return export.export_encoder(str(tmp_path_factory.mktemp("run") / "encoder"),
                               model_config=model_config, variables=variables, image_size=16,
                               mean=common.DIGITS_MEAN, std=common.DIGITS_STD,
                               metadata={"objective": "test"})


def _run(name, encoder_dir, workdir, **overrides):
  config = _eval_config(name, **{"encoder": encoder_dir, "eval.baselines": (), **overrides})
  summary = runner.run_evaluation(config, str(workdir), print_table=False)
  written = json.loads((workdir / "results.json").read_text())
  assert written == json.loads(json.dumps(summary))
  assert list(written["evaluations"]) == [name] and written["dataset"] == "digits"
  # The tiny configs cap every split at 512 examples: digits' 1,347 training images are capped.
  assert written["splits"] == {"train": "capped: 512 of 1,347, stratified", "test": "all 450"}
  report = written["evaluations"][name]
  for plot in report["plots"]:
    assert (workdir / plot).stat().st_size > 1000   # a PNG with content
    assert (workdir / plot).with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"   # and its PDF
  assert report["plots"]
  return report["results"]


def test_linear_probe_on_the_encoder_and_every_baseline(encoder_dir, tmp_path):
  results = _run("linear", encoder_dir, tmp_path,
                 **{"eval.baselines": ("random_init", "random_init_data_bn", "pixels")})
  assert list(results) == ["encoder", "random_init", "random_init_data_bn", "pixels"]
  for probe in results.values():
    assert 0.5 < probe["top1"] <= 1.0        # digits: pixels and random conv nets are far above chance
    assert 0.5 < probe["auc"] <= 1.0
    assert 1e-6 * 0.999 <= probe["l2"] <= 1e5   # the grid's ends, as float32
  table = json.loads((tmp_path / "results.json").read_text())["evaluations"]["linear"]["table"]
  assert "random_init_data_bn" in table and "pixels" in table and "AUC" in table


def test_a_remembered_probe_gives_the_solved_results_without_solving(encoder_dir, tmp_path,
                                                                    monkeypatch):
  """With eval.linear.memo_dir, a second evaluation of the same encoder and pixels reads every
  probe from the first one's results (the solver is not called) and reports the same numbers;
  an encoder with other features is solved afresh."""
  from ssl_jax.evaluation import linear_probe
  memo = {"eval.linear.memo_dir": str(tmp_path / "memo"), "eval.baselines": ("pixels",)}
  solved = _run("linear", encoder_dir, tmp_path / "first", **memo)
  assert len(os.listdir(tmp_path / "memo")) == 2   # the encoder and pixels

  solves = []
  original = linear_probe.linear_probe

  def counting_probe(*args, **kwargs):
    solves.append(1)
    return original(*args, **kwargs)

  counting_probe.__name__ = original.__name__   # the same probe: the same keys
  monkeypatch.setattr(linear_probe, "linear_probe", counting_probe)
  assert _run("linear", encoder_dir, tmp_path / "second", **memo) == solved
  assert not solves

  # Other weights give other features, hence another key: solved, and remembered beside.
  model_config = ml_collections.ConfigDict(dict(name="resnet10", stem="cifar", width=4,
                                                dtype="float32"))
  template = export.Encoder(model_config, None, 16, common.DIGITS_MEAN, common.DIGITS_STD, {})
  other = export.export_encoder(
      str(tmp_path / "other"), model_config=model_config,
      variables=baselines.random_init_encoder(template, seed=2).variables, image_size=16,
      mean=common.DIGITS_MEAN, std=common.DIGITS_STD, metadata={"objective": "test"})
  _run("linear", other, tmp_path / "third", **memo)
  assert len(solves) == 1 and len(os.listdir(tmp_path / "memo")) == 3


def test_all_runs_every_protocol_into_one_csv_and_latex_table(encoder_dir, tmp_path):
  """configs/eval/all.py: every evaluator in one run; results.csv holds exactly the scalars of
  results.json (read back independently) and results.tex one row per metric."""
  import csv
  config = _eval_config("all", **{"encoder": encoder_dir, "eval.baselines": ("pixels",)})
  assert tuple(config.eval.evaluators) == tuple(EVALUATORS)
  summary = runner.run_evaluation(config, str(tmp_path), print_table=False)
  assert list(summary["evaluations"]) == list(EVALUATORS)

  expected = {}
  for name, evaluation in summary["evaluations"].items():
    for encoder, results in evaluation["results"].items():
      expected.setdefault(encoder, {}).update(runner._flatten_scalars(results, f"{name}_"))
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [row["encoder"] for row in rows] == ["encoder", "pixels"]
  read = {row["encoder"]: {k: float(v) for k, v in row.items() if k != "encoder" and v}
          for row in rows}
  assert read == expected   # full precision: the same floats
  assert {"knn_top1_k20", "linear_top1", "fine_tune_10%_top1"} <= set(read["encoder"])
  assert "fine_tune_10%_top1" not in read["pixels"]   # pixels have no network to tune

  latex = (tmp_path / "results.tex").read_text()
  body = latex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
  assert len(body) == len(rows[0]) - 1   # one row per metric
  first = body[0].rstrip(" \\").split(" & ")
  assert first == ["knn\\_top1\\_k20", f"{read['encoder']['knn_top1_k20']:.4f}",
                   f"{read['pixels']['knn_top1_k20']:.4f}"]


def test_knn(encoder_dir, tmp_path):
  results = _run("knn", encoder_dir, tmp_path)["encoder"]
  assert set(results) == {"top1_k20", "top1_k200", "top1"}
  assert results["top1"] == results["top1_k20"]
  assert all(0.3 < v <= 1.0 for v in results.values())


def test_few_shot(encoder_dir, tmp_path):
  results = _run("few_shot", encoder_dir, tmp_path)["encoder"]
  assert set(results) == {"5way_1shot", "5way_5shot"}
  assert 0.2 < results["5way_1shot"]["mean"] < results["5way_5shot"]["mean"] <= 1.0
  assert results["5way_1shot"]["episodes"] == 20


def test_layers(encoder_dir, tmp_path):
  # (Spatial pooling onto a grid: test_stage_features_pool_the_stage_outputs.)
  results = _run("layers", encoder_dir, tmp_path)["encoder"]
  assert list(results) == ["stage1", "stage2", "stage3", "stage4"]
  assert all(0.2 < probe["top1"] <= 1.0 for probe in results.values())


def test_cka_against_itself_has_a_unit_diagonal(encoder_dir, tmp_path):
  results = _run("cka", encoder_dir, tmp_path, **{"eval.cka.other_encoder": ""})["encoder"]
  for kernel in ("linear", "rbf"):
    matrix = np.asarray(results["kernels"][kernel]["matrix"])
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-5)
    assert results["kernels"][kernel]["num_subsets"] == 5


def test_fine_tune_exports_the_tuned_encoder(encoder_dir, tmp_path):
  results = _run("fine_tune", encoder_dir, tmp_path)["encoder"]
  assert list(results) == ["10%", "100%"]
  assert results["10%"]["labelled_examples"] < results["100%"]["labelled_examples"] == 512
  for entry in results.values():
    lower, upper = entry["top1_ci95"]
    assert lower <= entry["top1"] <= upper
    assert ssl_jax.load_encoder(entry["encoder_dir"]).image_size == 16
  assert results["100%"]["top1"] > 0.3   # learns above chance (0.1) in 30 steps


def test_saliency(encoder_dir, tmp_path):
  results = _run("saliency", encoder_dir, tmp_path)["encoder"]
  assert results["occluder"] == {"size": 10, "stride": 1}
  for kind in ("occlusion", "gradient"):
    assert len(results[kind]["per_image"]) == 4
    assert 0.0 < results[kind]["attentive_diffusion_percent"] < 100.0


def test_invariance(encoder_dir, tmp_path):
  results = _run("invariance", encoder_dir, tmp_path,
                 **{"eval.invariance.sweeps.rotation": (0.0, 90.0),
                    "eval.invariance.sweeps.hue": (0.0, 0.5),
                    "eval.invariance.sweeps.grayscale": (0.0, 1.0),
                    "eval.invariance.sweeps.crop_scale": (1.0, 0.5),
                    "eval.invariance.sweeps.blur": (0.0, 1.0)})["encoder"]
  assert set(results["transforms"]) == {"rotation", "hue", "grayscale", "crop_scale", "flip",
                                        "blur"}
  assert -1.0 <= results["different_images_cosine"] < 1.0
  for sweep in results["transforms"].values():
    assert sweep["cosine"][0] == pytest.approx(1.0, abs=1e-5)   # identity first in each sweep
    assert all(-1.0 <= c <= 1.0 + 1e-6 for c in sweep["cosine"])


def test_stage_features_pool_the_stage_outputs(encoder_dir):
  encoder = ssl_jax.load_encoder(encoder_dir)
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  outputs = encoder(images)
  got = features.stage_feature_fn(encoder, spatial_size=2)(images)
  for index, stage in enumerate(outputs["stages"], start=1):
    stage = np.asarray(stage)
    np.testing.assert_allclose(got[f"stage{index}"], stage.mean(axis=(1, 2)), atol=1e-5)
    h, w = stage.shape[1:3]
    quadrant = stage[:, :h // 2, w // 2:].mean(axis=(1, 2))   # grid cell (0, 1)
    cells = np.asarray(got[f"stage{index}_s2"]).reshape(4, 2, 2, -1)
    np.testing.assert_allclose(cells[:, 0, 1], quadrant, atol=1e-5)


def test_every_evaluator_has_a_config():
  names = {f[:-3] for f in os.listdir(EVAL_CONFIGS)
           if f.endswith(".py") and not f.startswith(("common", "__"))}
  assert names == set(EVALUATORS) | {"all"}   # all.py: every protocol at once


def test_cli_runs_an_evaluation(encoder_dir, tmp_path):
  command = [sys.executable, os.path.join(REPO, "main.py"), "--mode=eval",
             "--config=" + os.path.join(EVAL_CONFIGS, "knn.py") + ":digits,tiny",
             f"--config.encoder={encoder_dir}", "--workdir=out", "--config.eval.knn.ks=(5,)"]
  result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "top-1 k=5" in result.stdout and "random_init_data_bn" in result.stdout
  assert "pixels" in result.stdout
  assert "evaluated on train: capped: 512 of 1,347, stratified; test: all 450" in result.stdout
  assert (tmp_path / "out" / "results.json").exists() and (tmp_path / "out" / "knn.png").exists()


@pytest.mark.parametrize("field, value, message", [
    ("encoder", "", "config.encoder is empty"),
    ("eval.evaluators", ("probe",), r"config.eval.evaluators has \['probe'\]; allowed: \['knn', "),
    ("eval.evaluators", ("(knn,)",), r"quote each name: --config.eval.evaluators="),
    ("eval.baselines", ("random",), r"config.eval.baselines: unknown baselines \['random'\]; allowed: \['random_init'"),
    ("eval.knn.ks", (0,), r"eval.knn.ks=\(0,\) must be one or more positive integers"),
    # Checked although the linear probe is not run: every protocol's settings are.
    ("eval.linear.select_by", "auc", r"eval.linear.select_by='auc' is not allowed"),
    ("data.source", "ftp", r"data.source='ftp' is not allowed"),
])
def test_bad_input_is_a_config_error_before_any_work(encoder_dir, tmp_path, field, value,
                                                     message):
  # main.py turns a ConfigError into its message on stderr and exit status 2.
  config = _eval_config("knn", **{"encoder": encoder_dir, field: value})
  with pytest.raises(config_validation.ConfigError, match=message):
    runner.run_evaluation(config, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_supervised_encoder_adds_its_row(encoder_dir, tmp_path):
  """`eval.supervised_encoder` adds a 'supervised' row, evaluated like the encoder itself (here the
  same directory, so the same numbers)."""
  results = _run("knn", encoder_dir, tmp_path, **{"eval.supervised_encoder": encoder_dir})
  assert list(results) == ["encoder", "supervised"]
  assert results["supervised"] == results["encoder"]


def test_a_supervised_encoder_that_is_not_an_export_is_refused(encoder_dir, tmp_path):
  config = _eval_config("knn", **{"encoder": encoder_dir,
                                  "eval.supervised_encoder": str(tmp_path)})
  with pytest.raises(config_validation.ConfigError, match="is not an exported encoder"):
    runner.run_evaluation(config, str(tmp_path / "out"))
