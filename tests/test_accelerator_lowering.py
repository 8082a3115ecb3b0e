"""Every objective's train step lowered for GPU and TPU on this CPU-only host (jax.export), with
what an accelerator run depends on checked in the StableHLO (issue 31, item 1; see
ssl_jax/lowering.py for the list)."""

import dataclasses
import importlib

import pytest

from ssl_jax import lowering
from ssl_jax.objectives import OBJECTIVES

pytestmark = pytest.mark.xdist_group("accelerator_lowering")


def _config(objective: str, *, name: str, image_size: int, batch_size: int,
            dtype: str = "bfloat16", conv_impl: str = "auto"):
  config = importlib.import_module(f"configs.{objective}").get_config("synthetic")
  config.model.update(name=name, stem="cifar" if image_size <= 64 else "imagenet", dtype=dtype,
                      conv_impl=conv_impl)
  config.data.image_size = image_size
  config.batch_size = batch_size
  if "queue_size" in config.objective_config:   # the MoCo family: the CIFAR queue
    config.objective_config.queue_size = 4096
  return config


def _problems(config):
  exported, abstract_state = lowering.export_train_step(config)
  report = lowering.report(exported, abstract_state, config.model)
  assert report.platforms == lowering.PLATFORMS
  return report, report.problems(config.model.dtype)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_resnet18_cifar_step_lowers_for_accelerators(objective):
  report, problems = _problems(_config(objective, name="resnet18", image_size=32,
                                       batch_size=512))
  assert problems == []
  assert report.donated_leaves == report.state_leaves > 0


@pytest.mark.parametrize("objective", ["moco_v2", "simsiam", "byol"])
def test_resnet50_224_step_lowers_for_accelerators(objective):
  report, problems = _problems(_config(objective, name="resnet50", image_size=224,
                                       batch_size=256))
  assert problems == []
  # The GPU branch carries cuSOLVER's calls (RankMe's SVD), the TPU branch its own.
  assert any(target.startswith("cusolver") for target in report.custom_call_targets)


def test_the_cpu_convolution_lowers_to_xla_s_own_on_accelerators():
  """conv_impl='cpu_native' forced (not 'auto'): `lax.platform_dependent` gives the cuda and tpu
  branches XLA's convolution, so the CPU kernel's FFI target never reaches an accelerator."""
  report, problems = _problems(_config("moco_v2", name="resnet18", image_size=32,
                                       batch_size=64, conv_impl="cpu_native"))
  assert problems == []
  assert not any("ssl_jax" in target for target in report.custom_call_targets)


def test_the_checks_catch_cpu_only_calls_host_transfers_and_a_float32_model():
  text = ("%0 = stablehlo.custom_call @lapack_sgesdd_ffi(%a) : (tensor<4x4xf32>) -> ...\n"
          "%1 = stablehlo.custom_call @cusolver_gesvdj_ffi(%a) : (tensor<4x4xf32>) -> ...\n"
          "%2 = stablehlo.custom_call @xla_ffi_python_gpu_callback(%a) : ...\n"
          "%3 = stablehlo.outfeed(%b, %t) : ...\n")
  parsed = lowering._custom_calls_and_transfers(text)
  assert parsed == {"custom_call_targets": frozenset({"lapack_sgesdd_ffi", "cusolver_gesvdj_ffi",
                                                      "xla_ffi_python_gpu_callback"}),
                    "host_transfers": ("stablehlo.outfeed",)}
  report, _ = _problems(_config("moco_v2", name="resnet18", image_size=32, batch_size=64,
                                dtype="float32"))
  assert report.convolution_dtypes == {"float32"}
  damaged = dataclasses.replace(report, donated_leaves=report.state_leaves - 1, **parsed)
  assert damaged.problems("bfloat16") == [
      "custom calls an accelerator does not provide: ['lapack_sgesdd_ffi', "
      "'xla_ffi_python_gpu_callback']",
      "host transfers inside the step: ['stablehlo.outfeed']",
      "convolutions in ['float32'], not bfloat16",
      "head matmuls on the features in ['float32'], not bfloat16",
      f"{report.state_leaves - 1} of {report.state_leaves} state leaves donated"]


def test_load_encoder_forward_lowers_for_accelerators():
  config = _config("moco_v2", name="resnet50", image_size=224, batch_size=64)
  report = lowering.encoder_forward_report(config.model, image_size=224, batch_size=64)
  assert report.convolution_dtypes == {"bfloat16"}
  assert report.custom_call_targets == frozenset() and report.host_transfers == ()
