"""Converts a published PyTorch checkpoint into an ssl-jax encoder directory.

  checkpoint file --safe_reader--> nested containers of NumPy arrays
    --find_state_dict--> the state dict (descending 'state_dict', 'model', VISSL's trunk, ...)
    --key prefix of the source--> torchvision names --key_mapping--> Flax variables
    --export.export_encoder--> WORKDIR/encoder (encoder.json + variables/), what load_encoder reads

Every Flax variable is filled from the checkpoint or the conversion fails naming the missing key;
nothing keeps a random initial value. Keys the encoder does not need (MoCo's key encoder and queue,
projection heads, classifiers, BatchNorm batch counters, optimizer state) are ignored and listed in
WORKDIR/conversion_report.json; keys under the encoder's prefix that are neither encoder weights
nor a known head mean the architecture is wrong, and fail the conversion.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from ssl_jax import export, models
from ssl_jax.torch_import import key_mapping, safe_reader
from ssl_jax.torch_import.errors import ConversionError
from ssl_jax.torch_import.sources import Source, get_source

# Keys under which training scripts nest the state dict, looked for in this order: plain PyTorch
# and Lightning ('state_dict'), PyContrast / DeiT-style ('model'), VISSL
# (classy_state_dict -> base_model -> model -> trunk), and a few re-saved layouts.
CONTAINER_KEYS = ("state_dict", "model", "classy_state_dict", "base_model", "trunk", "resnet",
                  "network", "encoder")
# Heads and other non-encoder modules published SSL checkpoints carry beside the backbone, named
# relative to the backbone's prefix (torchvision classifier, MoCo/SimCLR fc MLP, SwAV projection
# head and prototypes, BYOL projector/predictor, PIRL's jigsaw head).
HEAD_PREFIXES = ("fc.", "classifier.", "projection_head.", "projector.", "projection.",
                 "prototypes.", "head.", "heads.", "predictor.", "jigsaw.", "head_jig.")
# BatchNorm's counter of training batches; only used by torch for momentum=None.
UNUSED_BUFFER_SUFFIX = ".num_batches_tracked"

ENCODER_SUBDIR = "encoder"
REPORT_FILE = "conversion_report.json"
CONVERTED_IMAGE_STEM = "imagenet"
CONVERTED_WIDTH = 64


@dataclasses.dataclass
class KeyUsage:
  """How the keys of a state dict were used by one conversion."""

  key_prefix: str
  used: dict[str, str]                   # torch key -> Flax variable path
  ignored_outside_encoder: list[str]     # keys without the encoder prefix (encoder_k, queue, ...)
  ignored_heads: list[str]               # head / classifier keys under the prefix
  ignored_buffers: list[str]             # num_batches_tracked
  renamed_legacy_keys: dict[str, str]    # old DenseNet names -> today's


@dataclasses.dataclass
class ConversionReport:
  """What was taken from the checkpoint and what was left, key by key."""

  checkpoint: str
  source: str
  arch: str
  container: list[str]
  key_prefix: str
  used: dict[str, str]                   # torch key -> Flax variable path
  ignored_outside_encoder: list[str]     # keys without the encoder prefix (encoder_k, queue, ...)
  ignored_heads: list[str]               # head / classifier keys under the prefix
  ignored_buffers: list[str]             # num_batches_tracked
  ignored_entries: list[str]             # non-state-dict entries (epoch, optimizer, args, ...)
  renamed_legacy_keys: dict[str, str]

  def summary(self) -> str:
    """A few lines for the console: counts and the groups of ignored keys."""
    where = "/".join(self.container) or "top level"
    lines = [f"converted {os.path.basename(self.checkpoint)} as {self.source} ({self.arch}): "
             f"{len(self.used)} tensors from {where!r} under prefix {self.key_prefix!r}"]
    ignored = self.ignored_outside_encoder + self.ignored_heads
    if ignored:
      lines.append(f"ignored {len(ignored)} keys that are not part of the encoder:")
      groups = collections.defaultdict(list)
      for key in ignored:
        groups[_group_name(key, self.key_prefix)].append(key)
      for group, keys in groups.items():
        if keys == [group]:   # a single tensor, e.g. MoCo's queue
          lines.append(f"  {group}")
          continue
        shown = ", ".join(keys) if len(keys) <= 3 else f"{keys[0]}, ..., {keys[-1]}"
        lines.append(f"  {group}* ({len(keys)}): {shown}")
    if self.ignored_buffers:
      lines.append(f"ignored {len(self.ignored_buffers)} BatchNorm num_batches_tracked counters")
    if self.ignored_entries:
      lines.append(f"ignored entries beside the state dict: {', '.join(self.ignored_entries)}")
    if self.renamed_legacy_keys:
      lines.append(f"renamed {len(self.renamed_legacy_keys)} legacy DenseNet keys "
                   f"(norm.1 -> norm1, ...)")
    return "\n".join(lines)


def _group_name(key: str, prefix: str) -> str:
  """'module.encoder_k.layer1.0.conv1.weight' -> 'module.encoder_k.'; 'fc.0.weight' -> 'fc.'."""
  relative = key[len(prefix):] if key.startswith(prefix) else key
  head = key[:len(key) - len(relative)]
  parts = relative.split(".")
  for index, part in enumerate(parts[:-1]):
    if part not in ("module", "model"):
      return head + ".".join(parts[:index + 1]) + "."
  return key


def find_state_dict(tree: Any) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
  """Descends the checkpoint's containers to the state dict.

  Returns (state dict, the container keys followed, the other entries passed on the way)."""
  path: list[str] = []
  ignored: list[str] = []
  node = tree
  while True:
    if not isinstance(node, Mapping):
      where = "/".join(path) or "the file"
      raise ConversionError(f"{where} holds a {type(node).__name__}, not a state dict (a mapping "
                            f"from parameter names to tensors)")
    container = next((key for key in CONTAINER_KEYS if isinstance(node.get(key), Mapping)), None)
    if container is not None:
      ignored.extend("/".join(path + [str(key)]) for key in node if key != container)
      path.append(container)
      node = node[container]
      continue
    arrays = {key: value for key, value in node.items() if isinstance(value, np.ndarray)}
    if not arrays:
      where = "/".join(path) or "the top level"
      raise ConversionError(
          f"found no tensors at {where} of the checkpoint; its entries are "
          f"{sorted(map(str, node))[:20]} (the state dict is looked for under {CONTAINER_KEYS})")
    ignored.extend("/".join(path + [str(key)]) for key in node if key not in arrays)
    return arrays, path, ignored


def _model_config(arch: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"name": arch, "stem": CONVERTED_IMAGE_STEM,
                                    "width": CONVERTED_WIDTH, "dtype": "float32"})


@functools.lru_cache(maxsize=None)
def flax_variable_shapes(arch: str) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Every variable of the backbone (flattened path -> shape), traced without computing."""
  module = models.build_backbone(_model_config(arch))
  init = functools.partial(module.init, train=False)
  abstract = jax.eval_shape(init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(abstract).items()}


def _choose_prefix(state_dict: dict[str, np.ndarray], expected_keys: list[str],
                   prefixes: tuple[str, ...], arch: str, checkpoint: str) -> str:
  """The first prefix under which every expected key is present; else an error naming the first
  missing key under the closest prefix."""
  found = {prefix: sum(prefix + key in state_dict for key in expected_keys) for prefix in prefixes}
  for prefix in prefixes:
    if found[prefix] == len(expected_keys):
      return prefix
  best = max(prefixes, key=lambda prefix: found[prefix])
  sample = ", ".join(list(state_dict)[:4])
  if found[best] == 0:
    raise ConversionError(
        f"{checkpoint}: no {arch} encoder weights under the key prefixes {list(prefixes)} (looked "
        f"for e.g. {prefixes[0] + expected_keys[0]!r}); the checkpoint's keys begin {sample}. "
        f"Choose another --source or --arch, or give --key_prefix.")
  missing = [best + key for key in expected_keys if best + key not in state_dict]
  more = f" and {len(missing) - 1} more ({', '.join(missing[1:6])}, ...)" if len(missing) > 1 else ""
  raise ConversionError(
      f"{checkpoint}: missing encoder weight {missing[0]!r}{more}; {found[best]} of "
      f"{len(expected_keys)} {arch} weights were found under prefix {best!r}. A missing weight "
      f"is never left at a random value: check --arch, or the file is truncated.")


def convert_state_dict(state_dict: dict[str, np.ndarray], *, arch: str,
                       key_prefixes: tuple[str, ...], checkpoint: str = "<state dict>"):
  """Flax variables {'params', 'batch_stats'} of `arch` from a torchvision-named state dict.

  Returns (variables, KeyUsage)."""
  if arch not in models.BACKBONE_NAMES:
    raise ConversionError(f"unknown --arch {arch!r}; allowed: {sorted(models.BACKBONE_NAMES)}")
  renamed: dict[str, str] = {}
  if arch in models.DENSENET_SPECS:
    state_dict, renamed = key_mapping.modernise_legacy_names(state_dict)
  shapes = flax_variable_shapes(arch)
  torch_keys = {path: key_mapping.torch_name(arch, path) for path in shapes}
  prefix = _choose_prefix(state_dict, list(torch_keys.values()), key_prefixes, arch, checkpoint)

  flat_variables = {}
  used = {}
  wrong_shapes = []
  # In the checkpoint's order (torch's forward order), so the first mismatch reported is the
  # first layer where the architectures part.
  position = {key: index for index, key in enumerate(state_dict)}
  for path in sorted(shapes, key=lambda path: position[prefix + torch_keys[path]]):
    key = prefix + torch_keys[path]
    array = np.asarray(state_dict[key])
    expected = key_mapping.expected_torch_shape(path[-1], shapes[path])
    if array.shape != expected:
      wrong_shapes.append(f"{key!r} has shape {array.shape} but {arch} needs {expected}")
      continue
    if not np.issubdtype(array.dtype, np.floating):
      raise ConversionError(f"{checkpoint}: {key!r} holds {array.dtype}, not floating point")
    flat_variables[path] = key_mapping.torch_layout(path[-1], array).astype(np.float32)
    used[key] = "/".join(path)
  if wrong_shapes:
    more = f" ({len(wrong_shapes) - 1} more tensors differ)" if len(wrong_shapes) > 1 else ""
    raise ConversionError(f"{checkpoint}: {wrong_shapes[0]} (torch layout){more}; is --arch "
                          f"right? (allowed: {sorted(models.BACKBONE_NAMES)})")

  heads, buffers, outside, unexpected = [], [], [], []
  for key in state_dict:
    if key in used:
      continue
    if not key.startswith(prefix):
      outside.append(key)
      continue
    relative = key[len(prefix):]
    if relative.endswith(UNUSED_BUFFER_SUFFIX):
      buffers.append(key)
    elif relative.startswith(HEAD_PREFIXES):
      heads.append(key)
    else:
      unexpected.append(key)
  if unexpected:
    raise ConversionError(
        f"{checkpoint}: {len(unexpected)} keys under prefix {prefix!r} are neither {arch} weights "
        f"nor a known head ({', '.join(unexpected[:6])}{', ...' if len(unexpected) > 6 else ''});"
        f" the checkpoint holds a different architecture - check --arch (allowed: "
        f"{sorted(models.BACKBONE_NAMES)})")
  usage = KeyUsage(key_prefix=prefix, used=used, ignored_outside_encoder=outside,
                   ignored_heads=heads, ignored_buffers=buffers, renamed_legacy_keys=renamed)
  return traverse_util.unflatten_dict(flat_variables), usage


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def load_checkpoint_variables(checkpoint: str, source: str, *, arch: str | None = None,
                              key_prefix: str | None = None):
  """Reads and converts `checkpoint` without writing anything.

  Returns (model config, Flax variables, Source, ConversionReport)."""
  source_spec: Source = get_source(source)
  arch = arch or source_spec.arch
  if arch not in models.BACKBONE_NAMES:
    raise ConversionError(f"unknown --arch {arch!r}; allowed: {sorted(models.BACKBONE_NAMES)}")
  tree = safe_reader.read_checkpoint(checkpoint)
  state_dict, container, ignored_entries = find_state_dict(tree)
  prefixes = (key_prefix,) if key_prefix is not None else source_spec.key_prefixes
  variables, usage = convert_state_dict(state_dict, arch=arch, key_prefixes=prefixes,
                                        checkpoint=checkpoint)
  report = ConversionReport(checkpoint=os.path.abspath(checkpoint), source=source, arch=arch,
                            container=container, ignored_entries=ignored_entries,
                            **dataclasses.asdict(usage))
  return _model_config(arch), variables, source_spec, report


def convert_checkpoint(checkpoint: str, source: str, workdir: str, *, arch: str | None = None,
                       key_prefix: str | None = None) -> tuple[str, ConversionReport]:
  """Converts `checkpoint` to the encoder directory WORKDIR/encoder (what a training run's export
  writes, so `--mode=eval --workdir=WORKDIR` and `load_encoder(WORKDIR/encoder)` both find it),
  and writes the full key report to WORKDIR/conversion_report.json.

  Returns (encoder directory, report)."""
  if not checkpoint:
    raise ConversionError("--mode=convert needs --checkpoint=PATH (a .pth, .pth.tar or "
                          ".safetensors file)")
  if os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ConversionError(f"--workdir={workdir} holds a training run (it has checkpoints/); "
                          f"convert into a directory of its own so its encoder is not replaced")
  model_config, variables, source_spec, report = load_checkpoint_variables(
      checkpoint, source, arch=arch, key_prefix=key_prefix)
  os.makedirs(workdir, exist_ok=True)
  metadata = {
      "converted_from": os.path.abspath(checkpoint),
      "checkpoint_sha256": _sha256(checkpoint),
      "source": source,
      "source_description": source_spec.description,
      "key_prefix": report.key_prefix,
      "container": "/".join(report.container),
      "preprocessing_note": source_spec.preprocessing_note,
      "converter": "ssl_jax.torch_import",
  }
  encoder_path = export.export_encoder(
      os.path.join(workdir, ENCODER_SUBDIR), model_config=model_config, variables=variables,
      image_size=source_spec.image_size, mean=source_spec.mean, std=source_spec.std,
      metadata=metadata)
  with open(os.path.join(workdir, REPORT_FILE), "w") as f:
    json.dump(dataclasses.asdict(report), f, indent=2)
  return encoder_path, report
