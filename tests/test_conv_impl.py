"""`config.model.conv_impl`: the convolution training uses, and nothing else.

'xla' is the plain `nn.Conv`; 'cpu_native' hands the backbone's convs `ssl_jax.cpu`'s (XLA's
values, a faster weight gradient on CPU); 'auto' is cpu_native in a single-process CPU job. The
implementations must be interchangeable: the same params, gradients equal to float32 rounding
(bitwise where the CPU one only moves a transpose), and an encoder exported from a cpu_native run
loads as the plain model.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from engine_helpers import host_batches, small_config
from input_pipeline import device_augment
from ssl_jax import config_validation, export, models, train
from ssl_jax import sharding as sharding_lib
from ssl_jax.cpu import convolution, weight_grad_kernel
from ssl_jax.objectives import OBJECTIVES, build_objective

KERNEL_CALL = re.compile(r'custom_call_target="ssl_jax_conv_weight_grad"')


def backbone(conv_impl: str, width: int = 4, name: str = "resnet10"):
  config = ml_collections.ConfigDict(dict(name=name, stem="cifar", width=width,
                                          dtype="float32"))
  return models.build_backbone(config, conv_impl=conv_impl)


def train_mode_gradient(model):
  """The jitted gradient of a loss of the pooled features in training mode (BN on the batch)."""
  def loss(params, batch_stats, images):
    outputs, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                             mutable=["batch_stats"])
    return jnp.sum(jnp.sin(outputs["pooled"]))
  return jax.jit(jax.grad(loss))


def init_variables(model, images):
  return jax.jit(functools.partial(model.init, train=False))(jax.random.key(0, impl="rbg"),
                                                             images)


def images_of(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("conv_impl", ["xla", "cpu_native"])
def test_every_objective_trains_with_the_configured_convolution(name, conv_impl):
  config = importlib.import_module(f"configs.{name}").get_config("digits,tiny")
  config.model.conv_impl = conv_impl
  network = build_objective(config, num_batch_shards=1).network
  expected = None if conv_impl == "xla" else convolution.conv_general_dilated
  assert network.backbone.conv_general_dilated is expected


def test_build_backbone_resolves_each_name_to_a_convolution():
  assert backbone("xla").conv_general_dilated is None
  assert backbone("cpu_native").conv_general_dilated is convolution.conv_general_dilated
  # This session is one process on the CPU backend.
  assert backbone("auto").conv_general_dilated is convolution.conv_general_dilated
  with pytest.raises(ValueError, match=r"conv_impl 'fast'.*\['xla', 'cpu_native', 'auto'\]"):
    backbone("fast")


@pytest.mark.parametrize("backend,processes,expected", [
    ("cpu", 1, "cpu_native"), ("cpu", 2, "xla"), ("gpu", 1, "xla"), ("tpu", 4, "xla")])
def test_auto_is_the_cpu_convolution_only_in_single_process_cpu_jobs(monkeypatch, backend,
                                                                     processes, expected):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  monkeypatch.setattr(jax, "process_count", lambda: processes)
  assert models.resolve_conv_impl("auto") == expected
  assert models.resolve_conv_impl("xla") == "xla"
  assert models.resolve_conv_impl("cpu_native") == "cpu_native"


def test_config_validation_names_the_allowed_values():
  config = small_config("moco_v2")
  assert config.model.conv_impl == "auto"   # the configs' default
  config.model.conv_impl = "native"
  with pytest.raises(config_validation.ConfigError,
                     match=r"config.model.conv_impl='native'.*\['xla', 'cpu_native', 'auto'\]"):
    config_validation.validate_config(config, num_devices=8, process_count=1)


@pytest.mark.parametrize("name", ["resnet10", "resnet50", "densenet121"])
def test_params_do_not_depend_on_the_convolution(name):
  images = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  shapes = {}
  for conv_impl in models.CONV_IMPLS:
    model = backbone(conv_impl, width=2, name=name)
    shapes[conv_impl] = jax.eval_shape(functools.partial(model.init, train=False),
                                       jax.random.key(0), images)
  assert shapes["cpu_native"] == shapes["xla"] == shapes["auto"]


def test_training_state_is_the_same_pytree_whichever_convolution():
  states = {conv_impl: train.Experiment(small_config("moco_v2", **{"model.conv_impl": conv_impl}))
            .abstract_state for conv_impl in models.CONV_IMPLS}
  for conv_impl, state in states.items():
    assert jax.tree.structure(state) == jax.tree.structure(states["xla"]), conv_impl
    assert jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), state) == jax.tree.map(
        lambda leaf: (leaf.shape, leaf.dtype), states["xla"]), conv_impl


def test_several_devices_give_xla_gradients_bitwise():
  """With the session's 8 devices the CPU convolution only moves a transpose."""
  images = images_of((4, 8, 8, 3))
  plain, cpu_native = backbone("xla"), backbone("cpu_native")
  variables = init_variables(plain, images)
  want = train_mode_gradient(plain)(variables["params"], variables["batch_stats"], images)
  have = train_mode_gradient(cpu_native)(variables["params"], variables["batch_stats"], images)
  assert jax.tree.structure(have) == jax.tree.structure(want)
  for have_leaf, want_leaf in zip(jax.tree.leaves(have), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(have_leaf), np.asarray(want_leaf))


def test_one_device_gradients_with_the_kernel_agree_to_rounding(one_device_process):
  assert weight_grad_kernel.available(), "the native kernel did not build (see the warning)"
  images = images_of((4, 8, 8, 3))
  # Width 8: stage 4 has 64 channels, a whole block of the kernel.
  plain, cpu_native = backbone("xla", width=8), backbone("cpu_native", width=8)
  variables = init_variables(plain, images)
  arguments = (variables["params"], variables["batch_stats"], images)
  plain_gradient, native_gradient = train_mode_gradient(plain), train_mode_gradient(cpu_native)
  assert not KERNEL_CALL.search(plain_gradient.lower(*arguments).compile().as_text())
  assert KERNEL_CALL.search(native_gradient.lower(*arguments).compile().as_text())
  want, have = plain_gradient(*arguments), native_gradient(*arguments)
  for have_leaf, want_leaf in zip(jax.tree.leaves(have), jax.tree.leaves(want)):
    scale = float(jnp.max(jnp.abs(want_leaf)))
    assert scale > 0
    np.testing.assert_allclose(np.asarray(have_leaf), np.asarray(want_leaf), rtol=0,
                               atol=1e-5 * scale)


def run_two_steps(conv_impl: str, batches):
  config = small_config("moco_v2", **{"model.conv_impl": conv_impl})
  experiment = train.Experiment(config, devices=jax.devices()[:1])
  state, shardings = experiment.initial_state()
  step = experiment.jitted_train_step(shardings)
  for batch in batches:
    state, _ = step(state, sharding_lib.host_batch_to_global(batch, experiment.mesh))
  return experiment, state


def test_training_with_the_cpu_convolution_exports_a_plain_encoder(one_device_process, tmp_path):
  """Two MoCo v2 steps on one device with each convolution end at the same params (to rounding);
  the cpu_native run's encoder loads as the plain model, computes what the trained network
  computes, and supports forward-mode autodiff."""
  batches = host_batches(small_config("moco_v2"), 2)
  plain_experiment, plain_state = run_two_steps("xla", batches)
  experiment, state = run_two_steps("cpu_native", batches)
  assert jax.tree.structure(state.params) == jax.tree.structure(plain_state.params)
  for have, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(plain_state.params)):
    np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=0, atol=1e-6)

  config = experiment.config
  path = export.export_encoder(str(tmp_path / "encoder"), model_config=config.model,
                               variables=experiment.encoder_variables(state),
                               image_size=config.data.image_size, mean=config.data.mean,
                               std=config.data.std)
  with open(os.path.join(path, export.ENCODER_FILE)) as description:
    assert "conv_impl" not in json.load(description)["model"]
  encoder = export.load_encoder(path)
  assert encoder.module.conv_general_dilated is None

  trained_backbone = models.build_backbone(config.model, conv_impl="cpu_native")
  trained_features = jax.jit(lambda variables, images: trained_backbone.apply(
      variables, device_augment.normalize(images, encoder.mean, encoder.std),
      train=False)["pooled"])
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
  np.testing.assert_array_equal(
      np.asarray(encoder.pooled(images)),
      np.asarray(trained_features(experiment.encoder_variables(state), images)))
  floats = jnp.asarray(images, jnp.float32) / 255
  _, tangent = jax.jvp(lambda x: encoder.apply_unjitted(encoder.variables, x)["pooled"],
                       (floats,), (jnp.ones_like(floats),))
  assert np.all(np.isfinite(np.asarray(tangent))) and float(jnp.max(jnp.abs(tangent))) > 0
