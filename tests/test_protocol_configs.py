"""The CIFAR-10 results protocols (configs/protocols/cifar10.py) build for every objective, apply
lightly's recipe, and name what they accept on bad input. The runs themselves need the CIFAR-10
JPEG copy, which the suite never reads (docs/results.md)."""

import importlib

import pytest

from ssl_jax import config_validation

protocol = importlib.import_module("configs.protocols.cifar10")


@pytest.mark.parametrize("objective", protocol.OBJECTIVES)
@pytest.mark.parametrize("budget", ["", ",cpu_short", ",accelerator"])
def test_protocol_builds_and_validates_for_every_objective(objective, budget):
  config = protocol.get_config(objective + budget)
  config_validation.validate_config(config, num_devices=8, process_count=1)
  assert config.objective == objective and config.data.name == "cifar10_folder"
  assert (config.model.name, config.model.stem, config.model.conv_init) == (
      "resnet18", "cifar", "torch_default")
  assert config.optim.name == "sgd" and config.optim.weight_decay == 5e-4
  learning_rate = config.optim.base_lr * config.batch_size / config.optim.lr_batch_scale
  expected = 0.06 if objective == "simsiam" else 0.06 * config.batch_size / 128
  assert learning_rate == pytest.approx(expected)
  assert config.augment.blur_prob == (0.0, 0.0)
  assert tuple(config.eval.knn.ks) == (20, 200)
  assert "pixels" in config.eval.baselines
  if budget == ",accelerator":
    assert (config.model.width, config.batch_size, config.num_epochs) == (64, 512, 200)
  else:
    expected_steps = 600 if budget == ",cpu_short" else 3000
    assert (config.model.width, config.batch_size, config.num_steps) == (16, 256, expected_steps)
  if objective == "moco_v2":
    assert config.objective_config.queue_size == 4096 * config.batch_size // 256
    assert (config.objective_config.temperature, config.ema.tau_base) == (0.1, 0.99)
    assert config.optim.warmup_epochs == (0.0 if budget == ",accelerator" else 1.0)
  if objective == "simclr":
    assert config.objective_config.temperature == (0.5 if budget == ",accelerator" else 0.2)


def test_protocol_lists_every_objective_config():
  assert {"moco_v2", "byol", "simsiam", "simclr", "barlow_twins", "directpred", "moco_mse",
          "supervised"} <= set(protocol.OBJECTIVES)
  assert "common" not in protocol.OBJECTIVES


@pytest.mark.parametrize("arg, expected", [
    ("", "needs an objective"),
    ("mocov2", "allowed: \\['barlow_twins'.*budget: \\['cpu', 'cpu_short', 'accelerator'\\]"),
    ("moco_v2,gpu", "allowed: \\['cpu', 'cpu_short', 'accelerator'\\]"),
])
def test_bad_protocol_args_name_what_is_allowed(arg, expected):
  with pytest.raises(ValueError, match=expected):
    protocol.get_config(arg)


medmnist_protocol = importlib.import_module("configs.protocols.medmnist")


@pytest.mark.parametrize("objective", ["simsiam", "moco_v2", "supervised"])
@pytest.mark.parametrize("dataset", ["breastmnist", "retinamnist"])
def test_medmnist_protocol_builds_and_validates(objective, dataset):
  config = medmnist_protocol.get_config(f"{objective},{dataset}")
  config_validation.validate_config(config, num_devices=8, process_count=1)
  assert config.objective == objective and config.data.medmnist_flag == dataset
  assert config.data.image_size == 28 and config.model.stem == "cifar"
  assert config.augment.crop_scale == (0.5, 1.0)   # the MedMNIST preset's crops
  assert (config.batch_size, config.num_steps, config.optim.name) == (128, 500, "adamw")
  assert config.optim.base_lr * config.batch_size / config.optim.lr_batch_scale == 1e-3
  assert config.eval.evaluators == ("knn", "linear", "fine_tune")
  assert tuple(config.eval.fine_tune.label_fractions) == (1.0,)


@pytest.mark.parametrize("arg", ["simsiam", "simsiam,cifar10", "simsam,breastmnist", ""])
def test_bad_medmnist_protocol_args_name_what_is_allowed(arg):
  with pytest.raises(ValueError, match="needs '<objective>,<dataset>'.*datasets: \\['pathmnist'"):
    medmnist_protocol.get_config(arg)
