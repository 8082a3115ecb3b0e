"""Tests of ssl_jax.models against independent references.

References: torchvision's published parameter counts, NumPy re-computations of BatchNorm and of
the stem convolution with torch's padding, torch nn.Linear's init bounds, and identities that only
hold when the code is right (pooled = mean of the last stage; per-group BN on the whole batch =
plain BN on each group separately). Models are tiny (width 4-64, 4-64 px) so compiles stay short
on CPU; full-size models are only traced with jax.eval_shape.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from engine_helpers import fast_jit
from ssl_jax.models import (MLP, GroupedBatchNorm, ResNet, SSLNetwork, build_backbone,
                            feature_dim)
from ssl_jax.models.resnet import ResidualBlock, resnet

# torchvision.models.resnet{18,50,101,152}(): total parameters, and those of its 1000-way fc.
TORCHVISION_PARAM_COUNTS = {
    "resnet18": (11_689_512, 512 * 1000 + 1000),
    "resnet50": (25_557_032, 2048 * 1000 + 1000),
    "resnet101": (44_549_160, 2048 * 1000 + 1000),
    "resnet152": (60_192_808, 2048 * 1000 + 1000),
}
# The wide ResNets of SimCLR (Chen et al. 2020, table 13) and BYOL (Grill et al. 2020,
# table 1), in millions of parameters as published: every channel count doubled ("2x").
PAPER_WIDE_PARAM_MILLIONS = {("resnet50", 128): 94, ("resnet200", 128): 250}


def init_key() -> jax.Array:
  """An RBG-based key: threefry (the default) makes a jitted ResNet init compile ~10x slower on
  CPU, because its hash is inlined once per parameter; the initialisers' maths is unchanged."""
  return jax.random.key(0, impl="rbg")


def random_normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def count_params(params) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def jit_init(model: nn.Module, x: jax.Array, **call_kwargs):
  """Initialises with train=False (bound statically: a traced bool cannot pick a BN branch)."""
  init = functools.partial(model.init, train=False, **call_kwargs)
  return fast_jit(init)(init_key(), x)


def jit_train_apply(model: nn.Module, variables, x: jax.Array, **call_kwargs):
  apply = functools.partial(model.apply, train=True, mutable=["batch_stats"], **call_kwargs)
  return fast_jit(apply)(variables, x)


def shapes_after_apply(model: nn.Module, x_shape: tuple[int, ...]):
  """Output shapes of model(x, train=False), traced only."""
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), init_key(), x)
  return jax.eval_shape(functools.partial(model.apply, train=False), variables, x)


def numpy_grouped_batch_norm(x, num_groups, scale, bias, epsilon=1e-5):
  """Float64 reference: per-group normalisation, plus the group-averaged mean / unbiased var."""
  x = np.asarray(x, np.float64)
  outputs, means, unbiased_vars = [], [], []
  for group in np.split(x, num_groups, axis=0):
    axes = tuple(range(group.ndim - 1))
    mean, var = group.mean(axis=axes), group.var(axis=axes)
    outputs.append((group - mean) / np.sqrt(var + epsilon) * scale + bias)
    means.append(mean)
    unbiased_vars.append(group.var(axis=axes, ddof=1))
  return np.concatenate(outputs), np.mean(means, axis=0), np.mean(unbiased_vars, axis=0)


# ---------------------------------------------------------------------------------------------
# ResNet structure


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAM_COUNTS))
def test_param_count_matches_torchvision_without_fc(name):
  total, fc = TORCHVISION_PARAM_COUNTS[name]
  model = resnet(name, stem="imagenet", width=64)
  variables = jax.eval_shape(functools.partial(model.init, train=False), init_key(),
                             jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert count_params(variables["params"]) == total - fc


@pytest.mark.parametrize("name,width", sorted(PAPER_WIDE_PARAM_MILLIONS))
def test_wide_resnet_param_count_matches_papers(name, width):
  model = resnet(name, stem="imagenet", width=width)
  variables = jax.eval_shape(functools.partial(model.init, train=False), init_key(),
                             jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert round(count_params(variables["params"]) / 1e6) == PAPER_WIDE_PARAM_MILLIONS[name, width]


def test_feature_dim():
  assert feature_dim("resnet18", 64) == 512
  assert feature_dim("resnet34", 64) == 512
  assert feature_dim("resnet50", 64) == 2048
  assert feature_dim("resnet10", 4) == 32
  assert feature_dim("resnet200", 128) == 4096   # ResNet-200 (2x)


def test_unknown_name_lists_allowed_names():
  with pytest.raises(ValueError, match="resnet18.*resnet50|resnet50.*resnet18"):
    resnet("resnet19")
  with pytest.raises(ValueError, match="resnet34"):
    feature_dim("vit_b16", 64)


@pytest.mark.parametrize("name,stem,size,spatial_sizes", [
    ("resnet18", "imagenet", 64, (16, 8, 4, 2)),
    ("resnet50", "imagenet", 64, (16, 8, 4, 2)),
    ("resnet18", "cifar", 32, (32, 16, 8, 4)),
])
def test_stage_shapes(name, stem, size, spatial_sizes):
  width = 8
  expansion = 4 if name == "resnet50" else 1
  outputs = shapes_after_apply(resnet(name, stem=stem, width=width), (2, size, size, 3))
  assert len(outputs["stages"]) == 4
  for stage_index, (stage, spatial) in enumerate(zip(outputs["stages"], spatial_sizes)):
    assert stage.shape == (2, spatial, spatial, width * 2**stage_index * expansion)
  assert outputs["pooled"].shape == (2, width * 8 * expansion) == (2, feature_dim(name, width))
  assert outputs["pooled"].dtype == jnp.float32


def test_param_tree_names_are_readable():
  variables = jax.eval_shape(functools.partial(resnet("resnet18", width=4).init, train=False),
                             init_key(), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  params = variables["params"]
  assert {"stem_conv", "stem_bn", "stage1_block0", "stage4_block1"} <= set(params)
  # Projection shortcut only where the shape changes (first block of stages 2-4 for basic).
  assert "shortcut_conv" not in params["stage1_block0"]
  assert "shortcut_conv" in params["stage2_block0"]
  assert "shortcut_conv" not in params["stage2_block1"]
  # Convs have no bias (BN follows every conv).
  assert set(params["stem_conv"]) == {"kernel"}
  assert set(variables["batch_stats"]["stem_bn"]) == {"mean", "var"}


@pytest.fixture(scope="module")
def imagenet_stem_run():
  """One small imagenet-stem ResNet forward pass at an even size (64 px), stem output captured."""
  model = resnet("resnet10", stem="imagenet", width=4)
  x = random_normal(1, (2, 64, 64, 3))
  variables = jit_init(model, x)
  apply = functools.partial(model.apply, train=False,
                            capture_intermediates=lambda module, _: module.name == "stem_conv",
                            mutable=["intermediates"])
  outputs, state = fast_jit(apply)(variables, x)
  stem_output = state["intermediates"]["stem_conv"]["__call__"][0]
  return x, variables, outputs, stem_output


def test_pooled_is_mean_of_last_stage(imagenet_stem_run):
  _, _, outputs, _ = imagenet_stem_run
  last_stage = np.asarray(outputs["stages"][-1])
  np.testing.assert_allclose(outputs["pooled"], last_stage.mean(axis=(1, 2)), rtol=1e-5,
                             atol=1e-6)
  # A 2x2 last stage: at 1x1 mean and max pooling would agree and the check would be void.
  assert [stage.shape[1] for stage in outputs["stages"]] == [16, 8, 4, 2]


def test_stem_conv_uses_torch_padding(imagenet_stem_run):
  # torch pads a 7x7 stride-2 conv by 3 on every side; 'SAME' would pad (2, 3) at even sizes,
  # shifting every output by one pixel and breaking converted torch checkpoints.
  x, variables, _, stem_output = imagenet_stem_run
  kernel = np.asarray(variables["params"]["stem_conv"]["kernel"], np.float64)  # (7, 7, 3, C)
  padded = np.pad(np.asarray(x, np.float64), ((0, 0), (3, 3), (3, 3), (0, 0)))
  out_size = (64 + 2 * 3 - 7) // 2 + 1
  expected = np.zeros((2, out_size, out_size, kernel.shape[-1]))
  for row in range(out_size):
    for col in range(out_size):
      patch = padded[:, 2 * row:2 * row + 7, 2 * col:2 * col + 7, :]
      expected[:, row, col, :] = np.einsum("nhwc,hwcd->nd", patch, kernel)
  np.testing.assert_allclose(stem_output, expected, rtol=1e-4, atol=1e-4)


def test_conv_init_is_untruncated_kaiming_fan_out():
  # in != out channels, so fan_in (3*3*16) and fan_out (3*3*64) give different stds.
  block = ResidualBlock(width=64, stride=2, kind="basic")
  params = jit_init(block, jnp.zeros((1, 4, 4, 16)))["params"]
  kernel = np.asarray(params["conv1"]["kernel"])  # (3, 3, 16, 64): 9216 samples
  expected_std = np.sqrt(2.0 / (3 * 3 * 64))
  assert abs(kernel.std() / expected_std - 1) < 0.04
  # An untruncated normal has ~1.2% of values beyond 2.5 std; jax's truncated normal has none.
  assert np.mean(np.abs(kernel) > 2.5 * expected_std) > 0.006


def test_torch_default_conv_init_matches_torch_conv2d():
  """conv_init='torch_default' draws each conv as torch's nn.Conv2d does by default
  (uniform in +-1/sqrt(fan_in)), lightly's ResNets' init; the default stays torchvision's."""
  import torch  # pylint: disable=import-outside-toplevel
  block = ResidualBlock(width=64, stride=2, kind="basic", conv_init="torch_default")
  params = jit_init(block, jnp.zeros((1, 4, 4, 16)))["params"]
  for name, (in_channels, window) in {"conv1": (16, 3), "conv2": (64, 3),
                                      "shortcut_conv": (16, 1)}.items():
    kernel = np.asarray(params[name]["kernel"])   # HWIO
    torch.manual_seed(0)
    reference = torch.nn.Conv2d(in_channels, 64, window, bias=False).weight.detach().numpy()
    assert kernel.shape == reference.transpose(2, 3, 1, 0).shape
    bound = 1 / np.sqrt(in_channels * window * window)
    assert np.abs(kernel).max() <= bound + 1e-7
    assert np.abs(kernel).max() > 0.98 * np.abs(reference).max()
    assert abs(kernel.std() / reference.std() - 1) < 0.08
  default = jit_init(ResidualBlock(width=64, stride=2, kind="basic"),
                     jnp.zeros((1, 4, 4, 16)))["params"]
  assert abs(np.asarray(default["conv1"]["kernel"]).std() / np.sqrt(2 / (9 * 64)) - 1) < 0.04


def test_build_backbone_passes_conv_init_to_every_conv():
  config = ml_collections.ConfigDict(dict(name="resnet10", stem="cifar", width=8,
                                          dtype="float32", conv_init="torch_default"))
  params = jit_init(build_backbone(config), jnp.zeros((1, 8, 8, 3)))["params"]
  kernels = {jax.tree_util.keystr(path): leaf for path, leaf
             in jax.tree_util.tree_flatten_with_path(params)[0] if leaf.ndim == 4}
  assert len(kernels) == 12   # the stem, 4 blocks x 2 convs, 3 shortcuts (stages 2-4)
  for path, kernel in kernels.items():
    fan_in = np.prod(kernel.shape[:3])
    assert np.abs(kernel).max() <= 1 / np.sqrt(fan_in) + 1e-7, path
    assert np.abs(kernel).max() > 0.9 / np.sqrt(fan_in), path
  config.conv_init = "xavier"
  with pytest.raises(ValueError, match="Unknown conv_init 'xavier'; allowed values"):
    jit_init(build_backbone(config), jnp.zeros((1, 8, 8, 3)))
  densenet_config = ml_collections.ConfigDict(dict(name="densenet121", stem="cifar", width=8,
                                                   dtype="float32", conv_init="torch_default"))
  with pytest.raises(ValueError, match="applies to the ResNets only"):
    build_backbone(densenet_config)


def test_bottleneck_strides_its_3x3_conv():
  # ResNet v1.5 (torchvision): the stride sits on the 3x3 conv, not on the first 1x1.
  block = ResidualBlock(width=2, stride=2, kind="bottleneck")
  x = jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32)
  variables = jax.eval_shape(functools.partial(block.init, train=False), init_key(), x)
  is_conv = lambda module, _: (module.name or "").startswith("conv")  # the top module has no name
  apply = functools.partial(block.apply, train=False, mutable=["intermediates"],
                            capture_intermediates=is_conv)
  _, state = jax.eval_shape(apply, variables, x)
  conv_outputs = {name: value["__call__"][0].shape
                  for name, value in state["intermediates"].items()}
  assert conv_outputs == {"conv1": (1, 8, 8, 2), "conv2": (1, 4, 4, 2), "conv3": (1, 4, 4, 8)}


@pytest.mark.parametrize("kind,in_channels,width,last_bn", [
    ("basic", 4, 4, "bn2"),
    ("bottleneck", 8, 2, "bn3"),
])
def test_zero_init_residual_makes_block_identity(kind, in_channels, width, last_bn):
  block = ResidualBlock(width=width, stride=1, kind=kind, zero_init_residual=True)
  x = random_normal(2, (4, 4, 4, in_channels))
  variables = jit_init(block, x)
  assert not np.any(variables["params"][last_bn]["scale"])
  np.testing.assert_array_equal(variables["params"]["bn1"]["scale"], 1.0)
  output, _ = jit_train_apply(block, variables, x)
  np.testing.assert_allclose(output, jax.nn.relu(x), atol=1e-6)


def test_bn_groups_equals_separate_batch_norm_per_group():
  # Grouped BN over the whole batch must equal running the plain model on each group alone;
  # the running stats must be the average of the per-group updates.
  x = random_normal(3, (4, 8, 8, 3))
  x = x.at[2:].multiply(3.0).at[2:].add(2.0)  # make the two groups' statistics differ
  # Two stages suffice (stem, identity block, strided block with shortcut) and compile fast.
  grouped_model = ResNet(stage_sizes=(1, 1), block="basic", width=4, stem="cifar", bn_groups=2)
  plain_model = ResNet(stage_sizes=(1, 1), block="basic", width=4, stem="cifar")
  variables = jit_init(plain_model, x)
  grouped_out, grouped_state = jit_train_apply(grouped_model, variables, x)
  plain_apply = fast_jit(functools.partial(plain_model.apply, train=True, mutable=["batch_stats"]))
  first_out, first_state = plain_apply(variables, x[:2])
  second_out, second_state = plain_apply(variables, x[2:])
  np.testing.assert_allclose(grouped_out["pooled"],
                             np.concatenate([first_out["pooled"], second_out["pooled"]]),
                             rtol=1e-4, atol=1e-5)
  averaged_stats = jax.tree.map(lambda a, b: (a + b) / 2, first_state, second_state)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
               grouped_state, averaged_stats)
  # The groups' statistics really differ, so whole-batch BN could not have passed the above.
  assert not np.allclose(first_state["batch_stats"]["stem_bn"]["mean"],
                         second_state["batch_stats"]["stem_bn"]["mean"], atol=1e-2)


def test_bfloat16_compute_close_to_float32():
  # 16 px keeps >= 16 values per channel in every BN; at 1x1 maps the batch statistics of 4
  # values amplify rounding error and the comparison would be noise.
  x = random_normal(4, (4, 16, 16, 3))
  float32_model = resnet("resnet10", stem="cifar", width=8)
  bfloat16_model = resnet("resnet10", stem="cifar", width=8, dtype=jnp.bfloat16)
  variables = jit_init(bfloat16_model, x)
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == jnp.float32
  bf16_out, bf16_state = jit_train_apply(bfloat16_model, variables, x)
  f32_out, _ = jit_train_apply(float32_model, variables, x)
  assert all(stage.dtype == jnp.bfloat16 for stage in bf16_out["stages"])
  assert all(stage.dtype == jnp.float32 for stage in f32_out["stages"])
  assert bf16_out["pooled"].dtype == jnp.float32
  for leaf in jax.tree.leaves(bf16_state):
    assert leaf.dtype == jnp.float32
  reference = np.asarray(f32_out["pooled"])
  # bfloat16 keeps ~3 significant digits; ~10 layers of rounding give percent-level errors.
  relative_error = np.linalg.norm(bf16_out["pooled"] - reference) / np.linalg.norm(reference)
  assert relative_error < 0.03
  np.testing.assert_allclose(bf16_out["pooled"], reference, atol=0.15 * reference.std())


# ---------------------------------------------------------------------------------------------
# GroupedBatchNorm


def _bn_variables(num_channels, rng, mean=None, var=None):
  return {
      "params": {"scale": jnp.asarray(rng.uniform(0.5, 2.0, num_channels), jnp.float32),
                 "bias": jnp.asarray(rng.normal(size=num_channels), jnp.float32)},
      "batch_stats": {"mean": jnp.asarray(mean if mean is not None else np.zeros(num_channels),
                                          jnp.float32),
                      "var": jnp.asarray(var if var is not None else np.ones(num_channels),
                                         jnp.float32)},
  }


@pytest.mark.parametrize("num_groups,shape", [(1, (16, 5)), (1, (8, 3, 3, 5)), (4, (16, 5)),
                                              (4, (8, 3, 3, 5))])
def test_grouped_batch_norm_train_matches_numpy(num_groups, shape):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, shape[-1])
  # Groups with very different means: a shared mean/var would normalise them badly.
  group_offsets = np.repeat([0.0, 10.0, -20.0, 40.0], shape[0] // 4)
  x = (x + group_offsets.reshape((-1,) + (1,) * (len(shape) - 1))).astype(np.float32)
  variables = _bn_variables(shape[-1], rng)
  bn = GroupedBatchNorm(num_groups=num_groups)
  output, state = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  expected, batch_mean, batch_unbiased_var = numpy_grouped_batch_norm(
      x, num_groups, np.asarray(variables["params"]["scale"]),
      np.asarray(variables["params"]["bias"]))
  np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)
  # flax momentum 0.9 == torch momentum 0.1; running var from the unbiased batch variance.
  np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * batch_mean, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["var"], 0.9 + 0.1 * batch_unbiased_var,
                             rtol=1e-5)


def test_grouped_batch_norm_running_stats_momentum():
  rng = np.random.default_rng(1)
  x = rng.normal(3.0, 2.0, size=(6, 4)).astype(np.float32)
  old_mean, old_var = rng.normal(size=4), rng.uniform(0.5, 2.0, 4)
  variables = _bn_variables(4, rng, old_mean, old_var)
  _, state = GroupedBatchNorm(momentum=0.75).apply(variables, jnp.asarray(x), train=True,
                                                   mutable=["batch_stats"])
  np.testing.assert_allclose(state["batch_stats"]["mean"],
                             0.75 * old_mean + 0.25 * x.mean(0), rtol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["var"],
                             0.75 * old_var + 0.25 * x.var(0, ddof=1), rtol=1e-5)


def test_grouped_batch_norm_eval_uses_running_stats():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
  running_mean, running_var = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
  variables = _bn_variables(3, rng, running_mean, running_var)
  output = GroupedBatchNorm(num_groups=4).apply(variables, jnp.asarray(x), train=False)
  scale, bias = np.asarray(variables["params"]["scale"]), np.asarray(variables["params"]["bias"])
  expected = (x - running_mean) / np.sqrt(running_var + 1e-5) * scale + bias
  np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)


def test_grouped_batch_norm_without_affine_has_no_params():
  x = jnp.asarray(np.random.default_rng(3).normal(5.0, 4.0, size=(8, 6)), jnp.float32)
  bn = GroupedBatchNorm(use_scale=False, use_bias=False)
  variables = bn.init(init_key(), x, train=True)
  assert "params" not in variables or not variables["params"]
  output, _ = bn.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(np.mean(output, axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.var(output, axis=0), 1.0, rtol=1e-3)


def test_grouped_batch_norm_init_does_not_move_running_stats():
  variables = GroupedBatchNorm().init(init_key(), jnp.full((4, 3), 7.0), train=True)
  np.testing.assert_array_equal(variables["batch_stats"]["mean"], 0.0)
  np.testing.assert_array_equal(variables["batch_stats"]["var"], 1.0)


def test_grouped_batch_norm_rejects_indivisible_batch():
  bn = GroupedBatchNorm(num_groups=4)
  x = jnp.ones((6, 3))
  variables = bn.init(init_key(), x, train=False)
  with pytest.raises(ValueError, match=r"6.*4"):
    bn.apply(variables, x, train=True, mutable=["batch_stats"])


@pytest.mark.parametrize("num_groups,expects_communication", [(1, True), (8, False)])
def test_grouped_batch_norm_per_device_groups_need_no_communication(num_groups,
                                                                   expects_communication):
  # The point of G = number of devices: each device normalises its shard with local statistics.
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  x = random_normal(9, (16, 2, 2, 4)) + jnp.arange(16.0).reshape(16, 1, 1, 1)
  bn = GroupedBatchNorm(num_groups=num_groups)
  variables = bn.init(init_key(), x, train=False)
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  sharded_x = jax.device_put(x, batch_sharding)
  # Only the normalised output is returned, so the running-stat update is compiled away.
  normalise = jax.jit(lambda variables, x: bn.apply(variables, x, train=True,
                                                    mutable=["batch_stats"])[0])
  compiled_text = normalise.lower(variables, sharded_x).compile().as_text()
  assert ("all-reduce" in compiled_text) == expects_communication
  expected, _, _ = numpy_grouped_batch_norm(x, num_groups, 1.0, 0.0)
  np.testing.assert_allclose(normalise(variables, sharded_x), expected, rtol=1e-4, atol=1e-4)


def test_grouped_batch_norm_bfloat16_keeps_float32_statistics():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(4.0, 0.5, size=(16, 2, 2, 3)), jnp.bfloat16)
  bn = GroupedBatchNorm(num_groups=2)
  variables = bn.init(init_key(), x, train=False)
  output, state = bn.apply(variables, x, train=True, mutable=["batch_stats"])
  assert output.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state))
  expected, batch_mean, _ = numpy_grouped_batch_norm(np.asarray(x, np.float32), 2, 1.0, 0.0)
  np.testing.assert_allclose(np.asarray(output, np.float32), expected, atol=0.05)
  np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * batch_mean, rtol=1e-5)
  float32_output, _ = GroupedBatchNorm(num_groups=2, dtype=jnp.float32).apply(
      variables, x, train=True, mutable=["batch_stats"])
  assert float32_output.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# MLP heads


def test_mlp_matches_numpy_and_torch_linear_init():
  head = MLP(hidden_dims=(32,), out_dim=4, hidden_bias=True, hidden_bn=False, out_bias=True)
  x = random_normal(5, (3, 64))
  params = head.init(init_key(), x, train=False)["params"]
  hidden, output = params["hidden0_dense"], params["output_dense"]
  # torch nn.Linear: weights and bias uniform in +-1/sqrt(fan_in), bias not zero.
  for layer, fan_in in ((hidden, 64), (output, 32)):
    bound = 1 / np.sqrt(fan_in)
    assert np.max(np.abs(layer["kernel"])) <= bound
    assert np.max(np.abs(layer["kernel"])) > 0.9 * bound
    assert np.max(np.abs(layer["bias"])) <= bound
    assert np.any(layer["bias"] != 0)
  expected = np.maximum(np.asarray(x) @ hidden["kernel"] + hidden["bias"], 0)
  expected = expected @ np.asarray(output["kernel"]) + np.asarray(output["bias"])
  np.testing.assert_allclose(head.apply({"params": params}, x, train=False), expected,
                             rtol=1e-5, atol=1e-5)


def test_mlp_hidden_batch_norm_sits_before_relu():
  head = MLP(hidden_dims=(16,), out_dim=4, hidden_bias=False, hidden_bn=True, out_bias=True)
  x = random_normal(10, (8, 6))
  variables = head.init(init_key(), x, train=False)
  params = variables["params"]
  output, _ = head.apply(variables, x, train=True, mutable=["batch_stats"])
  hidden = np.asarray(x, np.float64) @ np.asarray(params["hidden0_dense"]["kernel"])
  hidden, _, _ = numpy_grouped_batch_norm(hidden, 1, 1.0, 0.0)  # fresh BN: scale 1, bias 0
  expected = (np.maximum(hidden, 0) @ np.asarray(params["output_dense"]["kernel"])
              + np.asarray(params["output_dense"]["bias"]))
  np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)


def test_mlp_simsiam_projector_layout():
  head = MLP(hidden_dims=(8, 8), out_dim=16, hidden_bias=False, hidden_bn=True, out_bias=False,
             out_bn="no_affine")
  x = random_normal(6, (8, 12)) + 3.0
  variables = head.init(init_key(), x, train=False)
  params = variables["params"]
  assert set(params) == {"hidden0_dense", "hidden0_bn", "hidden1_dense", "hidden1_bn",
                         "output_dense"}
  assert all(set(params[name]) == {"kernel"} for name in ("hidden0_dense", "output_dense"))
  assert set(params["hidden0_bn"]) == {"scale", "bias"}
  assert "output_bn" in variables["batch_stats"]
  output, _ = head.apply(variables, x, train=True, mutable=["batch_stats"])
  # The affine-free output BN leaves every feature with zero batch mean and unit variance.
  np.testing.assert_allclose(np.mean(output, axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(np.var(output, axis=0), 1.0, rtol=1e-2)


def test_mlp_moco_layout_has_no_batch_norm():
  head = MLP(hidden_dims=(8,), out_dim=4, hidden_bias=True, hidden_bn=False, out_bias=True)
  variables = head.init(init_key(), jnp.ones((2, 6)), train=False)
  assert "batch_stats" not in variables
  assert set(variables["params"]) == {"hidden0_dense", "output_dense"}
  assert set(variables["params"]["output_dense"]) == {"kernel", "bias"}


def test_mlp_bfloat16_outputs_float32_and_rejects_bad_out_bn():
  head = MLP(hidden_dims=(8,), out_dim=4, hidden_bn=True, out_bn="affine", dtype=jnp.bfloat16)
  x = random_normal(7, (4, 6))
  variables = head.init(init_key(), x, train=False)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  output, _ = head.apply(variables, x, train=True, mutable=["batch_stats"])
  assert output.dtype == jnp.float32 and output.shape == (4, 4)
  with pytest.raises(ValueError, match="no_affine"):
    MLP(hidden_dims=(), out_dim=4, out_bn="batch").init(init_key(), x, train=False)


# ---------------------------------------------------------------------------------------------
# SSLNetwork and build_backbone


def test_ssl_network_outputs_and_target_style_call():
  backbone = ResNet(stage_sizes=(1, 1), block="basic", width=4, stem="cifar")
  projector = MLP(hidden_dims=(16,), out_dim=8, hidden_bn=True)
  predictor = MLP(hidden_dims=(16,), out_dim=8, hidden_bn=True)
  online = SSLNetwork(backbone=backbone, projector=projector, predictor=predictor)
  x = random_normal(8, (4, 8, 8, 3))
  variables = jit_init(online, x)
  assert set(variables["params"]) == {"backbone", "projector", "predictor"}
  assert set(variables["batch_stats"]) == {"backbone", "projector", "predictor"}
  outputs, _ = jit_train_apply(online, variables, x)
  assert outputs["pooled"].shape == (4, 8)
  assert len(outputs["stages"]) == 2
  assert outputs["projection"].shape == (4, 8)
  assert outputs["prediction"].shape == (4, 8)

  # The EMA target holds only backbone + projector.
  target_variables = {collection: {key: tree[key] for key in ("backbone", "projector")}
                      for collection, tree in variables.items()}
  target_outputs, target_state = jit_train_apply(online, target_variables, x,
                                                 use_predictor=False)
  assert "prediction" not in target_outputs
  assert set(target_state["batch_stats"]) == {"backbone", "projector"}
  np.testing.assert_allclose(target_outputs["projection"], outputs["projection"], rtol=1e-5,
                             atol=1e-5)

  without_predictor = SSLNetwork(backbone=backbone, projector=projector)
  assert "prediction" not in shapes_after_apply(without_predictor, (2, 8, 8, 3))


def test_build_backbone_from_config():
  config = ml_collections.ConfigDict(dict(name="resnet18", stem="cifar", width=8,
                                          dtype="bfloat16"))
  backbone = build_backbone(config, bn_groups=2)
  assert isinstance(backbone, ResNet)
  assert tuple(backbone.stage_sizes) == (2, 2, 2, 2) and backbone.block == "basic"
  assert backbone.width == 8 and backbone.stem == "cifar" and backbone.bn_groups == 2
  assert backbone.dtype == jnp.bfloat16
  config.dtype = "float16"
  with pytest.raises(ValueError, match="float16"):
    build_backbone(config)
