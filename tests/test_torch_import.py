"""Tests of the PyTorch checkpoint import (ssl_jax/torch_import) against torch itself.

Each test builds torchvision-layout models in torch (tests/torch_reference_models.py: random
weights, BatchNorm running statistics far from their defaults), saves them the way the published
checkpoints are wrapped, converts, and compares the Flax encoder's features with torch's in eval
mode. Images are 64 px and two per batch, so ResNet-50 and DenseNet-121 stay fast on CPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import safetensors.numpy
import torch

import torch_reference_models
from ssl_jax import load_encoder, models
from ssl_jax.torch_import import (SOURCES, ConversionError, convert_checkpoint,
                                  load_checkpoint_variables)
from ssl_jax.torch_import import sources
from ssl_jax.torch_import.convert import convert_state_dict

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = 64
# Flax features must be within 1e-4 of torch's, absolutely for features of magnitude <= 1 and
# relative to the largest magnitude above that (features here reach ~3-8). Measured: <= 1e-5 for
# all three models; layout errors exceed it: BatchNorm epsilon 1e-6 instead of torch's 1e-5
# gives 1.8e-4, the stride on the bottleneck's 1x1 (ResNet v1) 0.59, 'SAME' max-pool padding 0.9.
TOLERANCE = 1e-4

TORCH_BUILDERS = {
    "resnet18": torch_reference_models.resnet18,
    "resnet50": torch_reference_models.resnet50,
    "densenet121": torch_reference_models.densenet121,
}


@functools.lru_cache(maxsize=None)
def reference(arch: str):
  """(torch model, numpy state dict, images NHWC, torch features) for `arch`, built once."""
  torch.manual_seed(0)
  model = TORCH_BUILDERS[arch]()
  calibration = torch.rand(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
  torch_reference_models.randomise(model, seed=2, calibration_images=calibration)
  images = np.random.default_rng(3).random((2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
  features = torch_features(model, images)
  state_dict = {key: value.numpy().copy() for key, value in model.state_dict().items()}
  return model, state_dict, images, features


def torch_features(model, images_nhwc: np.ndarray) -> dict:
  with torch.no_grad():
    inputs = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    if isinstance(model, torch_reference_models.TorchDenseNet):
      out = model.stage_features(inputs)
    else:
      out = model.features(inputs)
  return {"pooled": out["pooled"].numpy(),
          "stages": [stage.numpy().transpose(0, 2, 3, 1) for stage in out["stages"]]}


def assert_features_close(actual, expected, what: str) -> None:
  actual = np.asarray(actual)
  assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
  error = np.abs(actual - expected).max()
  scale = max(1.0, np.abs(expected).max())
  assert error <= TOLERANCE * scale, f"{what}: max |flax - torch| = {error} (scale {scale})"


def flax_features(arch: str, variables, images: np.ndarray):
  module = models.build_backbone(_float32_config(arch))
  return jax.jit(functools.partial(module.apply, train=False))(variables, jnp.asarray(images))


def _float32_config(arch: str):
  return ml_collections.ConfigDict({"name": arch, "stem": "imagenet", "width": 64,
                                    "dtype": "float32"})


def to_torch(state_dict: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
  return {key: torch.from_numpy(value) for key, value in state_dict.items()}


# --- the wrappings of published checkpoints ---------------------------------------------------

def save_moco(path, state_dict, prefix="module."):
  """MoCo (facebookresearch/moco and MoCo-CXR): query and key encoders, an MLP head, the queue,
  the optimizer and the training arguments (an argparse.Namespace) beside the state dict. The
  key encoder holds different values, so converting it by mistake would show."""
  wrapped = {}
  for key, value in state_dict.items():
    wrapped[f"{prefix}encoder_q.{key}"] = value
    wrapped[f"{prefix}encoder_k.{key}"] = value + 1.0 if value.dtype == np.float32 else value
  for encoder in ("encoder_q", "encoder_k"):
    wrapped[f"{prefix}{encoder}.fc.0.weight"] = np.ones((8, 4), np.float32)
    wrapped[f"{prefix}{encoder}.fc.0.bias"] = np.ones((8,), np.float32)
  wrapped[f"{prefix}queue"] = np.zeros((128, 16), np.float32)
  wrapped[f"{prefix}queue_ptr"] = np.zeros((1,), np.int64)
  torch.save({"epoch": 800, "arch": "resnet50", "state_dict": to_torch(wrapped),
              "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "params": [0, 1]}]},
              "args": argparse.Namespace(lr=0.03, moco_k=65536)}, path)


def save_swav(path, state_dict):
  """SwAV: a DistributedDataParallel state dict ('module.') with projection head and prototypes."""
  wrapped = {f"module.{key}": value for key, value in state_dict.items()}
  wrapped["module.projection_head.0.weight"] = np.ones((16, 8), np.float32)
  wrapped["module.projection_head.1.running_mean"] = np.zeros((16,), np.float32)
  wrapped["module.prototypes.weight"] = np.ones((30, 16), np.float32)
  torch.save(to_torch(wrapped), path)


def save_plain(path, state_dict):
  torch.save(to_torch(state_dict), path)


def save_nested(container: str):
  def save(path, state_dict):
    torch.save({container: to_torch(state_dict), "epoch": 100}, path)
  return save


def save_safetensors(path, state_dict):
  safetensors.numpy.save_file(state_dict, path)


def save_lightning_moco(path, state_dict):
  """CovidPrognosis (PyTorch Lightning): 'model.encoder_q.' keys under 'state_dict'."""
  wrapped = {f"model.encoder_q.{key}": value for key, value in state_dict.items()}
  wrapped.update({f"model.encoder_k.{key}": value for key, value in state_dict.items()})
  torch.save({"epoch": 5, "global_step": 1000, "state_dict": to_torch(wrapped),
              "hyper_parameters": {"learning_rate": 0.01}}, path)


def save_legacy_densenet(path, state_dict):
  """torchvision's pre-2018 DenseNet names: 'denselayer1.norm.1.weight' for 'norm1.weight'."""
  legacy = {}
  for key, value in state_dict.items():
    for module in ("norm", "relu", "conv"):
      for index in ("1", "2"):
        key = key.replace(f".{module}{index}.", f".{module}.{index}.")
    legacy[key] = value
  assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
  torch.save(to_torch(legacy), path)


# (file name, save function, --source); the arch is always given as an override where the
# source's default differs, as a user converting e.g. a MoCo ResNet-18 would.
def save_moco_legacy_format(path, state_dict):
  """MoCo's published files predate torch 1.6: the legacy (non-zip) serialization format."""
  original_save = torch.save
  try:
    torch.save = functools.partial(original_save, _use_new_zipfile_serialization=False)
    save_moco(path, state_dict)
  finally:
    torch.save = original_save
  assert not zipfile.is_zipfile(path)


WRAPPINGS = [
    ("moco.pth.tar", save_moco, "mocov2_r50"),
    ("moco_legacy_format.pth.tar", save_moco_legacy_format, "mocov2_r50"),
    ("swav.pth.tar", save_swav, "swav_r50"),
    ("plain.pth", save_plain, "torchvision_r50"),
    ("nested_state_dict.pth", save_nested("state_dict"), "simclr_r50"),
    ("nested_model.pth", save_nested("model"), "byol_r50"),
    ("weights.safetensors", save_safetensors, "torchvision_r50"),
]
DENSENET_WRAPPINGS = [
    ("lightning.ckpt", save_lightning_moco, "mimic_chexpert_moco_densenet121"),
    ("legacy_names.pth", save_legacy_densenet, "torchvision_densenet121"),
]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "densenet121"])
def test_every_wrapping_converts_to_features_equal_to_torch(arch, tmp_path):
  _, state_dict, images, expected = reference(arch)
  wrappings = WRAPPINGS + (DENSENET_WRAPPINGS if arch == "densenet121" else [])
  converted = {}
  for file_name, save, source in wrappings:
    path = str(tmp_path / file_name)
    save(path, state_dict)
    _, variables, _, report = load_checkpoint_variables(path, source, arch=arch)
    converted[file_name] = variables
    # Every BN/conv tensor of the torch model is used, nothing else.
    encoder_keys = [key for key in state_dict
                    if not key.endswith("num_batches_tracked")
                    and not key.startswith(("fc.", "classifier."))]
    assert len(report.used) == len(encoder_keys), file_name

  # The same weights whatever the wrapping (so the one forward below covers them all).
  reference_variables = converted["plain.pth"]
  for file_name, variables in converted.items():
    assert jax.tree.structure(variables) == jax.tree.structure(reference_variables), file_name
    jax.tree.map(np.testing.assert_array_equal, variables, reference_variables)

  outputs = flax_features(arch, reference_variables, images)
  assert outputs["pooled"].shape == (2, models.feature_dim(arch))
  assert_features_close(outputs["pooled"], expected["pooled"], f"{arch} pooled")
  assert len(outputs["stages"]) == 4
  for index, (stage, expected_stage) in enumerate(zip(outputs["stages"], expected["stages"])):
    assert_features_close(stage, expected_stage, f"{arch} stage {index + 1}")


def test_resnet_odd_image_size_matches_torch_pooling_and_padding():
  """61 x 45 px: odd sizes at every stride exercise the floor rounding of torch's padded
  max-pool and strided convs."""
  model, state_dict, _, _ = reference("resnet18")
  images = np.random.default_rng(4).random((2, 61, 45, 3), dtype=np.float32)
  expected = torch_features(model, images)
  variables, _ = convert_state_dict(state_dict, arch="resnet18", key_prefixes=("",))
  outputs = flax_features("resnet18", variables, images)
  for index, (stage, expected_stage) in enumerate(zip(outputs["stages"], expected["stages"])):
    assert_features_close(stage, expected_stage, f"stage {index + 1} at 61x45")
  assert_features_close(outputs["pooled"], expected["pooled"], "pooled at 61x45")


def test_ignored_keys_are_reported(tmp_path):
  _, state_dict, _, _ = reference("resnet18")
  path = str(tmp_path / "moco.pth.tar")
  save_moco(path, state_dict)
  _, _, _, report = load_checkpoint_variables(path, "mocov2_r50", arch="resnet18")
  assert report.key_prefix == "module.encoder_q."
  assert report.container == ["state_dict"]
  assert sorted(report.ignored_entries) == ["arch", "args", "epoch", "optimizer"]
  # The whole key encoder and the queue lie outside the encoder's prefix...
  key_encoder = [key for key in report.ignored_outside_encoder
                 if key.startswith("module.encoder_k.")]
  assert len(key_encoder) == len(state_dict) + 2
  assert {"module.queue", "module.queue_ptr"} <= set(report.ignored_outside_encoder)
  # ...the heads under it are recognised as heads, and the batch counters as unused buffers.
  assert sorted(report.ignored_heads) == sorted(
      ["module.encoder_q.fc.0.weight", "module.encoder_q.fc.0.bias",
       "module.encoder_q.fc.weight", "module.encoder_q.fc.bias"])
  assert len(report.ignored_buffers) == sum(key.endswith("num_batches_tracked")
                                            for key in state_dict)
  summary = report.summary()
  assert "module.encoder_k.*" in summary and "fc.*" in summary and "module.queue" in summary

  path = str(tmp_path / "swav.pth.tar")
  save_swav(path, state_dict)
  _, _, _, report = load_checkpoint_variables(path, "swav_r50", arch="resnet18")
  assert sorted(report.ignored_heads) == sorted(
      ["module.fc.weight", "module.fc.bias", "module.projection_head.0.weight",
       "module.projection_head.1.running_mean", "module.prototypes.weight"])


@pytest.mark.parametrize("source,missing_key", [
    ("torchvision_r18", "layer3.1.bn2.running_var"),
    ("moco_cxr_r18", "layer2.0.downsample.0.weight"),
])
def test_missing_encoder_weight_fails_naming_the_key(source, missing_key, tmp_path):
  _, state_dict, _, _ = reference("resnet18")
  path = str(tmp_path / "incomplete.pth")
  if source.startswith("moco"):
    save_moco(path, {key: value for key, value in state_dict.items() if key != missing_key})
    expected_name = f"module.encoder_q.{missing_key}"
  else:
    save_plain(path, {key: value for key, value in state_dict.items() if key != missing_key})
    expected_name = missing_key
  with pytest.raises(ConversionError, match=f"missing encoder weight '{expected_name}'"):
    load_checkpoint_variables(path, source)


def test_wrong_architecture_fails_naming_key_and_shapes(tmp_path):
  path = str(tmp_path / "resnet50.pth")
  resnet50_state = {key: value.numpy()
                    for key, value in torch_reference_models.resnet50().state_dict().items()}
  save_plain(path, resnet50_state)
  # A ResNet-50 file read as ResNet-18: every ResNet-18 name exists, but the bottleneck's first
  # conv is 1x1 where the basic block has a 3x3.
  with pytest.raises(ConversionError, match=r"'layer1.0.conv1.weight' has shape \(64, 64, 1, 1\)"
                     r" but resnet18 needs \(64, 64, 3, 3\)"):
    load_checkpoint_variables(path, "torchvision_r18")
  # Read as ResNet-18, a ResNet-18 with an extra block (a deeper net) is not silently truncated.
  _, resnet18_state, _, _ = reference("resnet18")
  deeper = dict(resnet18_state)
  deeper["layer1.2.conv1.weight"] = resnet18_state["layer1.1.conv1.weight"]
  save_plain(path, deeper)
  with pytest.raises(ConversionError, match=r"neither resnet18 weights.*layer1\.2\.conv1\.weight"):
    load_checkpoint_variables(path, "torchvision_r18")
  # Read as ResNet-50, a ResNet-18 lacks the bottleneck's third conv: named as missing.
  save_plain(path, resnet18_state)
  with pytest.raises(ConversionError, match=r"missing encoder weight 'layer1.0.bn3.running_mean'"):
    load_checkpoint_variables(path, "torchvision_r50")


def test_unknown_source_and_arch_list_allowed_values(tmp_path):
  with pytest.raises(ConversionError, match="allowed: .*mocov2_r50.*swav_r50"):
    load_checkpoint_variables(str(tmp_path / "any.pth"), "mocov3_vit")
  with pytest.raises(ConversionError, match="unknown --arch 'vit_b16'; allowed: .*densenet121.*resnet50"):
    load_checkpoint_variables(str(tmp_path / "any.pth"), "mocov2_r50", arch="vit_b16")


def test_unreadable_files_fail_with_the_file_named(tmp_path):
  garbage = b"this is not a checkpoint"
  (tmp_path / "garbage.pth").write_bytes(garbage)
  (tmp_path / "garbage.safetensors").write_bytes(garbage)
  with pytest.raises(ConversionError, match="cannot read .*garbage.pth as a PyTorch checkpoint"):
    load_checkpoint_variables(str(tmp_path / "garbage.pth"), "torchvision_r18")
  with pytest.raises(ConversionError, match="cannot read .*garbage.safetensors as safetensors"):
    load_checkpoint_variables(str(tmp_path / "garbage.safetensors"), "torchvision_r18")
  with pytest.raises(ConversionError, match="absent.pth' does not exist"):
    load_checkpoint_variables(str(tmp_path / "absent.pth"), "torchvision_r18")


def test_convert_refuses_a_training_workdir_and_a_missing_checkpoint_flag(tmp_path):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  with pytest.raises(ConversionError, match="holds a training run"):
    convert_checkpoint(str(tmp_path / "any.pth"), "mocov2_r50", str(tmp_path / "run"))
  assert not (tmp_path / "run" / "encoder").exists()
  with pytest.raises(ConversionError, match="needs --checkpoint"):
    convert_checkpoint(None, "mocov2_r50", str(tmp_path / "out"))


class _RunsCodeWhenUnpickled:
  """Unpickling calls open(marker, 'w'): a harmless stand-in for code execution."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_runs_code_is_refused_and_never_executed(zip_format, tmp_path):
  _, state_dict, _, _ = reference("resnet18")
  marker = tmp_path / "code_ran"
  path = str(tmp_path / "malicious.pth")
  torch.save({"state_dict": to_torch(state_dict), "payload": _RunsCodeWhenUnpickled(str(marker))},
             path, _use_new_zipfile_serialization=zip_format)
  # The file really would run code: its pickle calls the global io.open(marker, 'w')...
  if zip_format:
    with zipfile.ZipFile(path) as archive:
      pickle_bytes = archive.read(next(name for name in archive.namelist()
                                       if name.endswith("data.pkl")))
  else:
    with open(path, "rb") as f:
      pickle_bytes = f.read()
  assert b"cio\nopen\n" in pickle_bytes and str(marker).encode() in pickle_bytes
  # ...(the same payload through plain pickle does create its marker file)...
  control_marker = tmp_path / "control_code_ran"
  pickle.loads(pickle.dumps(_RunsCodeWhenUnpickled(str(control_marker)), protocol=2))
  assert control_marker.exists()
  # ...and the converter refuses it without running it.
  with pytest.raises(ConversionError, match=r"refused to load .*io\.open"):
    load_checkpoint_variables(path, "torchvision_r18")
  assert not marker.exists()


def test_cli_convert_end_to_end_with_normalisation(tmp_path):
  """main.py --mode=convert on a MoCo-CXR-style checkpoint; load_encoder applies the CheXpert
  normalisation recorded in encoder.json, so raw uint8 images give torch's features on
  (x / 255 - mean) / std."""
  model, state_dict, _, _ = reference("resnet18")
  checkpoint = str(tmp_path / "moco_cxr.pth.tar")
  save_moco(checkpoint, state_dict)
  workdir = tmp_path / "converted"
  result = subprocess.run(
      [sys.executable, "main.py", "--mode=convert", f"--checkpoint={checkpoint}",
       "--source=moco_cxr_r18", f"--workdir={workdir}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "module.encoder_k.*" in result.stdout
  assert f"wrote the encoder to {workdir / 'encoder'}" in result.stdout

  with open(workdir / "encoder" / "encoder.json") as f:
    description = json.load(f)
  assert description["mean"] == list(sources.CHEXPERT_MEAN)
  assert description["std"] == list(sources.CHEXPERT_STD)
  assert description["image_size"] == 320
  assert description["metadata"]["source"] == "moco_cxr_r18"
  report = json.loads((workdir / "conversion_report.json").read_text())
  assert "module.queue" in report["ignored_outside_encoder"]

  encoder = load_encoder(str(workdir / "encoder"))
  images = np.random.default_rng(5).integers(0, 256, (2, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  normalised = ((images.astype(np.float32) / 255.0 - np.float32(sources.CHEXPERT_MEAN))
                / np.float32(sources.CHEXPERT_STD))
  expected = torch_features(model, normalised.astype(np.float32))
  # The source's input size is 320; at this test's smaller size, through the documented path
  # for other sizes (encoder(images) refuses them).
  features = jax.jit(encoder.apply_unjitted)(encoder.variables, images)
  assert_features_close(features["pooled"], expected["pooled"], "pooled via load_encoder")
  assert_features_close(features["stages"][3], expected["stages"][3], "stage 4 via load_encoder")


def test_cli_bad_source_exits_2_listing_sources(tmp_path):
  result = subprocess.run(
      [sys.executable, "main.py", "--mode=convert", f"--checkpoint={tmp_path / 'x.pth'}",
       "--source=moco_v9", f"--workdir={tmp_path / 'out'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert "unknown --source 'moco_v9'" in result.stderr
  for name in SOURCES:
    assert name in result.stderr


def test_safetensors_and_training_never_import_torch(tmp_path):
  _, state_dict, _, _ = reference("resnet18")
  path = str(tmp_path / "weights.safetensors")
  save_safetensors(path, state_dict)
  script = (
      "import sys\n"
      "import ssl_jax, ssl_jax.train, ssl_jax.torch_import\n"
      "assert 'torch' not in sys.modules, 'importing ssl_jax imported torch'\n"
      "from ssl_jax.torch_import import load_checkpoint_variables\n"
      f"_, variables, _, report = load_checkpoint_variables({path!r}, 'torchvision_r18')\n"
      "assert 'torch' not in sys.modules, 'reading safetensors imported torch'\n"
      "print(len(report.used))\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  assert int(result.stdout.strip()) == 100   # 20 convs + 20 BNs x 4 tensors


def test_densenet_matches_torchvision_parameter_count():
  """torchvision.models.densenet121(): 7,978,856 parameters, 1,025,000 of them in the classifier."""
  module = models.build_backbone(_float32_config("densenet121"))
  variables = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                             jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert sum(leaf.size for leaf in jax.tree.leaves(variables["params"])) == 7_978_856 - 1_025_000
  assert models.feature_dim("densenet121") == 1024
