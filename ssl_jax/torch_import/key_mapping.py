"""Names and layouts: which torchvision state-dict entry fills each Flax variable, and how.

The mapping runs from the Flax side: every leaf of the backbone's variable tree (from
`jax.eval_shape` of its init) is named in torchvision's scheme, so each Flax variable has exactly
one source and nothing can be left at a random initial value.

ResNet (ssl_jax/models/resnet.py)          torchvision
  stem_conv / stem_bn                       conv1 / bn1
  stage{s}_block{b}/conv{i}, bn{i}          layer{s}.{b}.conv{i}, bn{i}
  stage{s}_block{b}/shortcut_conv, _bn      layer{s}.{b}.downsample.0, downsample.1
DenseNet (ssl_jax/models/densenet.py): the Flax module path joined with '.' under 'features.'
  (denseblock1/denselayer1/norm1 -> features.denseblock1.denselayer1.norm1).

Leaves: conv kernel (H, W, in, out) <- weight (out, in, H, W) transposed; BatchNorm scale <- weight,
bias <- bias, batch_stats mean <- running_mean, var <- running_var. torch's BatchNorm2d epsilon
(1e-5, which no state dict stores) equals GroupedBatchNorm's default.
"""

from __future__ import annotations

import re

import numpy as np

from ssl_jax import models

# (collection, leaf) -> torch parameter/buffer name
LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}

_RESNET_MODULES = [
    (re.compile(r"^stem_conv$"), "conv1"),
    (re.compile(r"^stem_bn$"), "bn1"),
    (re.compile(r"^stage(\d+)_block(\d+)$"), r"layer\1.\2"),
    (re.compile(r"^shortcut_conv$"), "downsample.0"),
    (re.compile(r"^shortcut_bn$"), "downsample.1"),
    (re.compile(r"^((?:conv|bn)\d+)$"), r"\1"),
]

# torchvision's DenseNet checkpoints from before 2018 name a dense layer's modules 'norm.1',
# 'conv.2', ... (torchvision renames them on load); today's names are 'norm1', 'conv2'.
_LEGACY_DENSE_LAYER = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var)$")


def _resnet_module_name(flax_name: str) -> str:
  for pattern, replacement in _RESNET_MODULES:
    if pattern.match(flax_name):
      return pattern.sub(replacement, flax_name)
  raise ValueError(f"no torchvision name for the ResNet module {flax_name!r}")


def torch_name(arch: str, flax_path: tuple[str, ...]) -> str:
  """The torchvision state-dict key of the Flax variable at `flax_path` (collection first)."""
  collection, *modules, leaf = flax_path
  if (collection, leaf) not in LEAF_NAMES:
    raise ValueError(f"no torchvision counterpart for the Flax variable {'/'.join(flax_path)}")
  leaf_name = LEAF_NAMES[(collection, leaf)]
  if arch in models.DENSENET_SPECS:
    return ".".join(["features", *modules, leaf_name])
  if arch in models.RESNET_SPECS:
    return ".".join([*(_resnet_module_name(module) for module in modules), leaf_name])
  raise ValueError(f"unknown architecture {arch!r}; allowed: {sorted(models.BACKBONE_NAMES)}")


def torch_layout(flax_leaf: str, array: np.ndarray) -> np.ndarray:
  """Rearranges a torch array into the Flax layout of the leaf it fills."""
  if flax_leaf == "kernel":
    return np.transpose(array, (2, 3, 1, 0))   # OIHW -> HWIO
  return array


def expected_torch_shape(flax_leaf: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  if flax_leaf == "kernel":
    height, width, in_channels, out_channels = flax_shape
    return (out_channels, in_channels, height, width)
  return tuple(flax_shape)


def modernise_legacy_names(state_dict: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                         dict[str, str]]:
  """Renames pre-2018 DenseNet keys ('...denselayer1.norm.1.weight' -> '...norm1.weight');
  returns the new dict and {old: new} for the report."""
  renamed = {}
  result = {}
  for key, value in state_dict.items():
    match = _LEGACY_DENSE_LAYER.match(key)
    if match:
      new_key = f"{match.group(1)}{match.group(2)}.{match.group(3)}"
      renamed[key] = new_key
      key = new_key
    result[key] = value
  return result, renamed
