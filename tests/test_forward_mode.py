"""Forward-mode autodiff through every backbone and through a loaded encoder.

Every backbone spec, with both stems, is traced under `jax.jvp` (abstractly: a primitive without
a forward-mode rule, such as a custom_vjp, fails the trace). Networks made of each block kind
(basic, bottleneck, dense) and stem, and a loaded encoder, are then evaluated: `jax.jvp`,
`jax.linearize`, `jax.jacfwd` and a Hessian-vector product (forward over reverse) are each
checked against reverse mode, which computes the same derivatives another way:
- jvp and linearize: u . (J v) equals (u^T J) . v, the vjp of a random cotangent u;
- jacfwd: u^T J, contracted from the forward Jacobian, equals the vjp of u, element by element;
- HVP: forward over reverse equals reverse over reverse, grad of (grad g . v).
The evaluated networks have one block a stage: the specs only repeat those blocks, and
evaluating a ResNet-50 or DenseNet-121 whole took minutes of compilation on 2 CPU cores.

Params come from the model's own init; BatchNorm runs in inference mode, as in an encoder.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import export, models

STEMS = ("cifar", "imagenet")


def image_size(model) -> int:
  """Small images whose maps stay at least 1x1 in every stage: a DenseNet's three 2x2 average
  pools need 8 px after the stem, a ResNet (whose strided convs pad) gets 4 so that the early
  windows overlap; the ImageNet stem divides by 4."""
  stem_stride = 4 if model.stem == "imagenet" else 1
  return stem_stride * (8 if isinstance(model, models.DenseNet) else 4)


def tree_vdot(a, b) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def random_like(tree, seed: int):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype), tree)


def assert_agree(have, want, scale, rtol=2e-4, what=""):
  """float32 results of two summation orders: equal up to rtol of the magnitude of the terms
  summed (`scale`), not of a result that cancellation may have made small."""
  np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=0,
                             atol=rtol * float(scale) + 1e-30, err_msg=what)


def forward_mode_results(apply, params, images, seed: int = 0) -> dict:
  """Every forward-mode derivative of `apply(params, images)` under test, with its reverse-mode
  counterpart (see the module docstring). A pure function: jit it or run it eagerly."""
  params_direction = random_like(params, seed)
  images_direction = random_like(images, seed + 1)
  outputs, pullback = jax.vjp(apply, params, images)
  cotangent = random_like(outputs, seed + 2)
  params_cotangent, images_cotangent = pullback(cotangent)

  _, params_tangent = jax.jvp(lambda p: apply(p, images), (params,), (params_direction,))
  _, linear_in_images = jax.linearize(lambda x: apply(params, x), images)
  images_tangent = linear_in_images(images_direction)

  # One example is enough for a full Jacobian: (N, D) outputs by (1, H, W, C) inputs.
  one_example = images[:1]
  jacobian = jax.jacfwd(lambda x: apply(params, x))(one_example)
  _, one_example_pullback = jax.vjp(lambda x: apply(params, x), one_example)
  one_example_cotangent = random_like(jax.eval_shape(apply, params, one_example), seed + 3)
  (one_example_vjp,) = one_example_pullback(one_example_cotangent)

  scalar = lambda p: jnp.vdot(cotangent, apply(p, images))
  _, hvp_forward_over_reverse = jax.jvp(jax.grad(scalar), (params,), (params_direction,))
  hvp_reverse_over_reverse = jax.grad(
      lambda p: tree_vdot(jax.grad(scalar)(p), params_direction))(params)
  return dict(
      jvp=(jnp.vdot(cotangent, params_tangent), tree_vdot(params_cotangent, params_direction),
           jnp.sum(jnp.abs(cotangent * params_tangent))),
      linearize=(jnp.vdot(cotangent, images_tangent), jnp.vdot(images_cotangent,
                                                               images_direction),
                 jnp.sum(jnp.abs(cotangent * images_tangent))),
      jacfwd=(jnp.tensordot(one_example_cotangent, jacobian, axes=one_example_cotangent.ndim),
              one_example_vjp, jnp.max(jnp.abs(one_example_vjp))),
      hvp=(hvp_forward_over_reverse, hvp_reverse_over_reverse,
           jnp.max(jnp.stack([jnp.max(jnp.abs(leaf))
                              for leaf in jax.tree.leaves(hvp_reverse_over_reverse)]))),
      params_tangent_norm=jnp.sqrt(jnp.sum(params_tangent**2)))


def assert_forward_mode_matches_reverse_mode(results: dict) -> None:
  assert 0 < float(results["params_tangent_norm"]) < np.inf
  for name in ("jvp", "linearize", "jacfwd"):
    have, want, scale = results[name]
    assert float(scale) > 0, name
    assert_agree(have, want, scale, what=name)
  have, want, scale = results["hvp"]
  assert float(scale) > 0
  for have_leaf, want_leaf in zip(jax.tree.leaves(have), jax.tree.leaves(want)):
    assert_agree(have_leaf, want_leaf, scale, rtol=1e-4, what="hvp")


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("name", models.BACKBONE_NAMES)
def test_every_backbone_traces_under_jvp(name, stem):
  config = ml_collections.ConfigDict(dict(name=name, stem=stem, width=1, dtype="float32"))
  model = models.build_backbone(config)
  images = jax.ShapeDtypeStruct((2, image_size(model), image_size(model), 3), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                             images)
  apply = lambda variables_, x: model.apply(variables_, x, train=False)
  outputs, tangents = jax.eval_shape(
      lambda v, x: jax.jvp(apply, (v, x), (v, x)), variables, images)
  assert all(min(stage.shape[1:3]) >= 1 for stage in outputs["stages"])
  assert jax.tree.structure(tangents) == jax.tree.structure(outputs)
  assert jax.tree.map(lambda leaf: leaf.shape, tangents) == jax.tree.map(
      lambda leaf: leaf.shape, outputs)


# Each block kind and each stem, one block a stage (DenseNet-121's layers, fewer and narrower).
EVALUATED = {
    "resnet10_cifar": lambda: models.resnet("resnet10", stem="cifar", width=1),
    "resnet10_imagenet": lambda: models.resnet("resnet10", stem="imagenet", width=1),
    "bottleneck_imagenet": lambda: models.ResNet(stage_sizes=(1, 1, 1, 1), block="bottleneck",
                                                 stem="imagenet", width=1),
    "dense_cifar": lambda: models.DenseNet(block_sizes=(1, 1, 1, 1), growth_rate=2, bn_size=2,
                                           stem="cifar", width=2),
}


@pytest.mark.parametrize("network", sorted(EVALUATED))
def test_forward_mode_matches_reverse_mode(network):
  model = EVALUATED[network]()
  size = image_size(model)
  images = jnp.asarray(np.random.default_rng(7).normal(size=(2, size, size, 3)), jnp.float32)
  # An RBG key: threefry's hash would be inlined once per parameter of the jitted init.
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0, impl="rbg"), images)
  batch_stats = variables["batch_stats"]
  apply = lambda params, x: model.apply({"params": params, "batch_stats": batch_stats}, x,
                                        train=False)["pooled"]
  results = jax.jit(functools.partial(forward_mode_results, apply))(variables["params"], images)
  assert_forward_mode_matches_reverse_mode(results)


def test_forward_mode_through_a_loaded_encoder(tmp_path):
  config = ml_collections.ConfigDict(dict(name="resnet10", stem="cifar", width=4,
                                          dtype="float32"))
  model = models.build_backbone(config)
  images = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 8, 8, 3)), jnp.float32)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0, impl="rbg"), images)
  path = export.export_encoder(str(tmp_path / "encoder"), model_config=config,
                               variables=variables, image_size=8, mean=(0.5,) * 3,
                               std=(0.25,) * 3)
  encoder = export.load_encoder(path)
  batch_stats = encoder.variables["batch_stats"]
  apply = lambda params, x: encoder.apply_unjitted(
      {"params": params, "batch_stats": batch_stats}, x)["pooled"]
  results = jax.jit(functools.partial(forward_mode_results, apply))(encoder.variables["params"],
                                                                     images)
  assert_forward_mode_matches_reverse_mode(results)
