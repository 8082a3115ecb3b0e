"""Reads a foreign checkpoint file into plain Python containers of NumPy arrays, never running code
from it.

A .pth / .pth.tar file is a pickle, and unpickling can call any importable function. So torch
files are read only with `torch.load(..., weights_only=True)`, whose unpickler rebuilds tensors and
plain containers and refuses every other global; the only classes added to its allow-list are
listed in SAFE_GLOBALS (data holders whose reconstruction calls nothing). There is deliberately no
way to pass weights_only=False: a checkpoint that needs another class is refused with the class
named. safetensors files hold no code at all and are read with `safetensors.numpy`, without torch.

torch is an optional dependency (`pip install 'ssl-jax[convert]'`), imported here on first use
only, so `import ssl_jax` and training never import it.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from typing import Any

import numpy as np

from ssl_jax.torch_import.errors import ConversionError

# Harmless classes published checkpoints carry beside the weights: MoCo-style training scripts
# save their argparse.Namespace of arguments (rebuilt as an empty object plus a __dict__ update).
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

MIN_TORCH_VERSION = (2, 6)
SAFETENSORS_SUFFIX = ".safetensors"


def _import_torch():
  try:
    import torch
  except ImportError:
    raise ConversionError(
        "reading a PyTorch checkpoint needs torch >= 2.6: pip install 'ssl-jax[convert]' (or "
        "save the state dict as .safetensors, which is read without torch)") from None
  version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
  if version < MIN_TORCH_VERSION:
    raise ConversionError(f"torch {torch.__version__} is too old: the safe loader needs torch >= "
                          f"{'.'.join(map(str, MIN_TORCH_VERSION))} (pip install 'ssl-jax[convert]')")
  return torch


def _unsafe_globals(torch, path: str) -> list[str]:
  """The globals a (zip-format) checkpoint references beyond the allow-list, without loading it."""
  try:
    return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
  except Exception:  # legacy (non-zip) format: torch cannot list them; the load error says more
    return []


def _tensors_to_numpy(torch, tree: Any) -> Any:
  if isinstance(tree, torch.Tensor):
    tensor = tree.detach().cpu()
    if tensor.dtype == torch.bfloat16:   # NumPy has no bfloat16; float32 holds it exactly
      tensor = tensor.to(torch.float32)
    return tensor.numpy()
  if isinstance(tree, dict):
    return {key: _tensors_to_numpy(torch, value) for key, value in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(_tensors_to_numpy(torch, value) for value in tree)
  return tree


def _unpickler_reason(message: str) -> str:
  """What torch's weights-only unpickler refused (the rest of its message suggests
  weights_only=False, which this converter never does)."""
  match = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", message,
                    re.DOTALL)
  reason = match.group(1) if match else message.strip().splitlines()[-1]
  # Its advice to allow-list the global is not ours to give for an unknown file.
  return " ".join(reason.split()).split(" Please use")[0]


def read_torch_file(path: str) -> Any:
  """Loads a torch checkpoint with the weights-only unpickler; tensors come back as NumPy arrays."""
  torch = _import_torch()
  try:
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
      loaded = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as error:
    reason = _unpickler_reason(str(error))
    if "Unsupported global" not in reason:
      raise ConversionError(f"cannot read {path} as a PyTorch checkpoint ({reason})") from None
    unsafe = _unsafe_globals(torch, path)
    named = f" It references {', '.join(unsafe)}." if unsafe else ""
    raise ConversionError(
        f"refused to load {path}: it holds objects other than tensors, plain containers and "
        f"{', '.join(f'{cls.__module__}.{cls.__qualname__}' for cls in SAFE_GLOBALS)}, "
        f"and unpickling them could run code.{named} ({reason}) If you trust the file, re-save "
        f"only its state dict (tensors) with torch.save or safetensors and convert that.") from None
  except Exception as error:  # a malformed file can fail anywhere inside the unpickler
    raise ConversionError(f"cannot read {path} as a PyTorch checkpoint "
                          f"({type(error).__name__}: {error})") from None
  return _tensors_to_numpy(torch, loaded)


def read_safetensors_file(path: str) -> dict[str, np.ndarray]:
  """Reads a safetensors file with NumPy only (no torch, no pickle)."""
  from safetensors import SafetensorError
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except (SafetensorError, OSError, ValueError, TypeError) as error:
    raise ConversionError(f"cannot read {path} as safetensors: {error}") from None


def read_checkpoint(path: str) -> Any:
  """The contents of a .pth / .pth.tar / .pt (torch) or .safetensors file, arrays as NumPy."""
  if not os.path.isfile(path):
    raise ConversionError(f"checkpoint file {path!r} does not exist")
  if path.endswith(SAFETENSORS_SUFFIX):
    return read_safetensors_file(path)
  return read_torch_file(path)
