"""Every config builds; bad input fails early with a clear message, exit code 2, nothing written."""

import glob
import importlib
import os
import re
import subprocess
import sys

import ml_collections
import pytest

from configs import common
from ssl_jax import config_validation, train
from ssl_jax.evaluation.evaluators import EVALUATORS
from ssl_jax.objectives import OBJECTIVES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                      if not os.path.basename(p).startswith(("common", "__")))


EVAL_CONFIG_FILES = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "eval", "*.py"))
    if not os.path.basename(p).startswith(("common", "__")))


def _config(name: str, arg: str = "digits,tiny") -> ml_collections.ConfigDict:
  return importlib.import_module(f"configs.{name}").get_config(arg)


def test_every_objective_has_a_config_and_every_config_an_objective():
  assert set(CONFIG_FILES) == set(OBJECTIVES)


@pytest.mark.parametrize("name", CONFIG_FILES)
@pytest.mark.parametrize("dataset", sorted(common.DATASETS))
@pytest.mark.parametrize("tiny", [False, True])
def test_every_config_builds_and_validates(name, dataset, tiny):
  config = _config(name, dataset + (",tiny" if tiny else ""))
  assert config.objective == name
  assert config.data.name == dataset
  config_validation.validate_config(config, num_devices=8, process_count=1)
  module = importlib.import_module(f"configs.{name}")
  assert f"configs/{name}.py:" in module.__doc__, "the docstring must hold the run command"


@pytest.mark.parametrize("name", EVAL_CONFIG_FILES)
@pytest.mark.parametrize("dataset", sorted(common.DATASETS))
@pytest.mark.parametrize("tiny", [False, True])
def test_every_eval_config_builds(name, dataset, tiny):
  config = importlib.import_module(f"configs.eval.{name}").get_config(
      dataset + (",tiny" if tiny else ""))
  if name == "all":
    assert config.eval.evaluators == tuple(EVALUATORS)
  else:
    assert config.eval.evaluators == (name,) and name in config.eval
  assert config.data.name == dataset and config.encoder == ""
  module = importlib.import_module(f"configs.eval.{name}")
  assert f"configs/eval/{name}.py:" in module.__doc__, "the docstring must hold the run command"
  assert "--mode=eval" in module.__doc__


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_tiny_shrinks_the_model_and_run(name):
  full, tiny = _config(name, "digits"), _config(name, "digits,tiny")
  assert tiny.model.width < full.model.width
  assert 0 < tiny.num_steps <= 600


def test_unknown_dataset_arg_lists_the_allowed_ones():
  with pytest.raises(ValueError, match="allowed datasets are .*'cifar10'.*'digits'"):
    _config("moco_v2", "digitz")


def test_unknown_key_message_names_the_key_and_allowed_fields():
  config = _config("moco_v2")
  message = config_validation.unknown_key_message(config, "optim.lrr")
  assert "optim.lrr" in message and "base_lr" in message
  assert config_validation.unknown_key_message(config, "optim.base_lr") is None


@pytest.mark.parametrize("field, value, expected", [
    ("objective", "mocov3",
     re.escape(f"unknown objective 'mocov3'; allowed: {sorted(OBJECTIVES)}")),
    ("model.name", "resnet19", r"'resnet19' is not allowed; choose one of \['resnet10'"),
    ("data.source", "ftp", r"'ftp' is not allowed"),
    ("optim.name", "sgdd", r"'sgdd' is not allowed; choose one of \['sgd', 'lars', 'adamw'\]"),
    ("model.conv_init", "kaiming", r"'kaiming' is not allowed; choose one of "
                                   r"\['kaiming_normal_fan_out', 'torch_default'\]"),
    ("batch_size", 60, r"batch_size=60 must be divisible by the 8 devices"),
])
def test_bad_values_fail_before_any_work(tmp_path, field, value, expected):
  config = _config("moco_v2")
  section, _, key = field.rpartition(".")
  (config[section] if section else config)[key] = value
  with pytest.raises(config_validation.ConfigError, match=expected):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run") == []   # nothing written beyond the (empty) workdir


def test_queue_not_divisible_by_batch_is_a_config_error(tmp_path):
  config = _config("moco_v2")
  config.objective_config.queue_size = 1000   # tiny batch is 64
  with pytest.raises(config_validation.ConfigError, match="1000.*64|64.*1000"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_unwritable_workdir_is_a_config_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(config_validation.ConfigError, match="not writable"):
    train.train_and_evaluate(_config("moco_v2"), str(blocker / "run"))


@pytest.mark.parametrize("override, expected", [
    ("--config.optim.lrr=0.1", "config.optim has no field 'lrr'; allowed fields: ['base_lr'"),
    ("--config.batch_size=abc", "--config.batch_size=abc"),
    ("--config.objective=mocov3", "unknown objective 'mocov3'"),
])
def test_cli_bad_input_exits_2_with_a_message(tmp_path, override, expected):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "main.py"),
       "--config=" + os.path.join(REPO, "configs", "moco_v2.py") + ":digits,tiny", override,
       "--workdir=" + str(tmp_path / "run")],
      capture_output=True, text=True, timeout=120, cwd=tmp_path)
  assert result.returncode == 2, result.stderr[-2000:]
  assert expected in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_misspelt_key_without_config_flag_exits_2_with_a_message(tmp_path):
  """Without --config, ml_collections applies the overrides while defining the flag (at import
  of main.py); the misspelt key must still get the one-line message, not a traceback."""
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "main.py"), "--config.optim.base_lrr=0.1",
       "--workdir=" + str(tmp_path / "run")],
      capture_output=True, text=True, timeout=120, cwd=tmp_path)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [
      "error: unknown config key 'config.optim.base_lrr': config.optim has no field 'base_lrr'; "
      "allowed fields: ['base_lr', 'bias_and_norm_lr_multiplier', 'exclude_bias_and_norm', "
      "'lr_batch_scale', 'momentum', 'name', 'nesterov', 'predictor_lr_multiplier', "
      "'predictor_schedule', 'predictor_weight_decay', 'schedule', 'warmup_epochs', "
      "'weight_decay']"]
  assert not (tmp_path / "run").exists()
