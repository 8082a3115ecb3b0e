"""What a sweep is: a list of runs, each a dict of config overrides, checked against the config.

Two ways to write one, which combine (every sweep-file run times every --sweep product):
- `--sweep=optim.base_lr=1e-3,3e-3 --sweep=model.width=8,16` (or `;` between keys): the cartesian
  product of the values, the last key varying fastest. Values are parsed with the type of the
  config field they replace (int, float, bool, str, tuple such as `(0.2,1.0)`).
- `--sweep_file=path.py[:arg]`: a Python file whose `get_sweep(arg)` returns a list of override
  dicts (`{"optim.base_lr": 0.1}`), in the spirit of big_vision's `get_hyper`; `product` below
  builds the usual grids.

Every run gets a directory name made from its overrides (`optim.base_lr=0.003`), unique and
filesystem-safe, and the command-line flags that reproduce it (`--config.optim.base_lr=0.003`).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import itertools
import re
from typing import Any, Iterable, Mapping

import ml_collections

from ssl_jax import config_validation

# What a run directory name may hold: no path separators, spaces, quotes or shell characters.
_SAFE_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9._=,+-]")
_MAX_NAME_LENGTH = 150   # well under the 255 bytes file systems allow, leaving room for a hash
_TRUE_WORDS = ("true", "yes", "1")
_FALSE_WORDS = ("false", "no", "0")


class SweepError(config_validation.ConfigError):
  """A sweep definition that cannot be run; the message names the key or value and what is
  allowed."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep: its config overrides (dotted key -> typed value) and directory name."""
  overrides: dict[str, Any]
  name: str

  def flags(self) -> list[str]:
    """The `--config.<key>=<value>` flags that apply this run's overrides."""
    return [override_flag(key, value) for key, value in self.overrides.items()]


def product(grid: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
  """Every combination of the values in `grid` ({key: values}), the last key varying fastest:
  product({"a": [1, 2], "b": [3, 4]}) == [{"a": 1, "b": 3}, {"a": 1, "b": 4}, {"a": 2, ...}]."""
  keys = list(grid)
  return [dict(zip(keys, values)) for values in itertools.product(*(list(grid[k]) for k in keys))]


def format_value(value: Any) -> str:
  """A value as `--config.<key>=` takes it (ml_collections parses tuples with literal_eval)."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (tuple, list)):
    inner = ",".join(format_value(item) if not isinstance(item, str) else repr(item)
                     for item in value)
    return f"({inner},)" if len(value) == 1 else f"({inner})"
  return repr(value) if isinstance(value, float) else str(value)


def override_flag(key: str, value: Any) -> str:
  return f"--config.{key}={format_value(value)}"


def _field_type(config: ml_collections.ConfigDict, key: str) -> type:
  """The type of the leaf `key` of `config`, or a SweepError naming the allowed keys."""
  message = config_validation.unknown_key_message(config, key)
  if message:
    raise SweepError(f"sweep: {message}")
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  if isinstance(node[leaf], ml_collections.ConfigDict):
    raise SweepError(f"sweep: config.{key} is a group of fields, not a value; sweep one of its "
                     f"fields: {sorted(f'{key}.{field}' for field in node[leaf].keys())}")
  return node.get_type(leaf)


def _bad_value(key: str, value: Any, expected: str) -> SweepError:
  return SweepError(f"sweep: config.{key} expects {expected}, got {value!r}")


def _parse_scalar(key: str, text: str, field_type: type) -> Any:
  """`text` (from the command line) as a value of `field_type`."""
  if field_type is bool:
    if text.lower() in _TRUE_WORDS:
      return True
    if text.lower() in _FALSE_WORDS:
      return False
    raise _bad_value(key, text, f"a bool ({'/'.join(_TRUE_WORDS)} or {'/'.join(_FALSE_WORDS)})")
  if field_type is int:
    try:
      return int(text)
    except ValueError:
      raise _bad_value(key, text, "an int") from None
  if field_type is float:
    try:
      return float(text)
    except ValueError:
      raise _bad_value(key, text, "a float") from None
  if field_type is str:
    return text
  try:   # a field without a fixed type (None default): a Python literal, else a string
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _check_scalar(key: str, value: Any, field_type: type) -> Any:
  """A Python `value` (from a sweep file) checked against `field_type`; ints become floats."""
  if field_type is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise _bad_value(key, value, "a float")
  if field_type in (bool, int, str) and type(value) is not field_type:
    raise _bad_value(key, value, {bool: "a bool", int: "an int", str: "a str"}[field_type])
  return value


def _element_type(current: tuple) -> type | None:
  """The common type of a tuple field's current elements (None when mixed or empty)."""
  types = {type(item) for item in current}
  if types == {int, float}:
    return float
  return types.pop() if len(types) == 1 else None


def _typed_value(config: ml_collections.ConfigDict, key: str, value: Any, *,
                 from_text: bool) -> Any:
  field_type = _field_type(config, key)
  if field_type is tuple:
    if from_text:
      try:
        value = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        raise _bad_value(key, value, "a tuple such as (0.2,1.0) or (20,)") from None
    if not isinstance(value, (tuple, list)):
      raise _bad_value(key, value, "a tuple such as (0.2,1.0) or (20,)")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    element_type = _element_type(tuple(node[leaf]))
    if element_type is None:
      return tuple(value)
    return tuple(_check_scalar(key, item, element_type) for item in value)
  if from_text:
    return _parse_scalar(key, value, field_type)
  return _check_scalar(key, value, field_type)


def _strip_prefix(key: str) -> str:
  key = key.strip()
  return key[len("config."):] if key.startswith("config.") else key


def split_top_level(text: str, separator: str) -> list[str]:
  """`text` split at `separator`, except inside (), [] or quotes (tuple and string values)."""
  parts, current, depth, quote = [], [], 0, None
  for character in text:
    if quote:
      quote = None if character == quote else quote
    elif character in "'\"":
      quote = character
    elif character in "([":
      depth += 1
    elif character in ")]":
      depth -= 1
    elif character == separator and depth == 0:
      parts.append("".join(current))
      current = []
      continue
    current.append(character)
  parts.append("".join(current))
  return parts


def parse_sweep_flags(config: ml_collections.ConfigDict,
                      sweep_flags: Iterable[str]) -> list[dict[str, Any]]:
  """The runs of `--sweep key=v1,v2,...` flags (each may hold several `;`-separated keys): the
  product of their values, typed as the config fields they replace."""
  grid: dict[str, list[Any]] = {}
  for flag in sweep_flags:
    for item in split_top_level(flag, ";"):
      if not item.strip():
        continue
      key, equals, values_text = item.partition("=")
      key = _strip_prefix(key)
      if not equals or not key:
        raise SweepError(f"sweep: {item.strip()!r} is not key=v1,v2,...; e.g. "
                         "--sweep=optim.base_lr=1e-3,3e-3,1e-2")
      if key in grid:
        raise SweepError(f"sweep: config.{key} is swept twice; give all its values in one "
                         f"--sweep={key}=v1,v2,...")
      texts = [text.strip() for text in split_top_level(values_text, ",")]
      if not values_text.strip() or any(not text for text in texts):
        raise SweepError(f"sweep: config.{key} has an empty value in {values_text!r}; give "
                         f"{key}=v1,v2,...")
      grid[key] = [_typed_value(config, key, text, from_text=True) for text in texts]
  return product(grid) if grid else []


def load_sweep_file(config: ml_collections.ConfigDict, spec: str) -> list[dict[str, Any]]:
  """The runs of a sweep file `path.py[:arg]`: its `get_sweep(arg)` (or `get_sweep()` without
  an arg) returns a list of override dicts, checked and typed against `config`."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_ssl_jax_sweep_file", path)
  if module_spec is None:
    raise SweepError(f"sweep file {path!r} is not a Python file (.py)")
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except FileNotFoundError:
    raise SweepError(f"sweep file {path!r} does not exist") from None
  if not callable(getattr(module, "get_sweep", None)):
    raise SweepError(f"sweep file {path!r} has no function get_sweep() returning a list of "
                     "override dicts")
  try:
    runs = module.get_sweep(arg) if arg else module.get_sweep()
  except (ValueError, KeyError, TypeError) as error:   # e.g. an unknown arg
    raise SweepError(f"sweep file {path!r}: get_sweep({arg!r}): {error}") from None
  if not isinstance(runs, (list, tuple)) or not all(isinstance(run, Mapping) for run in runs):
    raise SweepError(f"sweep file {path!r}: get_sweep() must return a list of dicts "
                     "{'optim.base_lr': 0.1, ...}")
  return [{_strip_prefix(key): _typed_value(config, _strip_prefix(key), value, from_text=False)
           for key, value in run.items()} for run in runs]


def _name_value(value: Any) -> str:
  """A value as it reads in a directory name: tuples as their elements joined by '_'."""
  if isinstance(value, (tuple, list)):
    return "_".join(_name_value(item) for item in value)
  return format_value(value)


def _exact_text(overrides: Mapping[str, Any]) -> str:
  return ",".join(f"{key}={format_value(value)}" for key, value in overrides.items())


def _with_digest(name: str, overrides: Mapping[str, Any]) -> str:
  digest = hashlib.sha1(_exact_text(overrides).encode()).hexdigest()[:8]
  return f"{name[:_MAX_NAME_LENGTH]}-{digest}"


def run_name(overrides: Mapping[str, Any]) -> str:
  """A directory name for a run: `key=value` pairs joined by commas. Where a value holds
  characters unsafe in paths, or the name is long, they are replaced and a short hash of the
  exact overrides keeps names of different runs different."""
  if not overrides:
    return "base"
  readable = ",".join(f"{key}={_name_value(value)}" for key, value in overrides.items())
  safe = _SAFE_NAME_CHARACTER.sub("_", readable).replace("..", "_")
  if safe == readable and len(safe) <= _MAX_NAME_LENGTH:
    return safe
  return _with_digest(safe, overrides)


def build_runs(config: ml_collections.ConfigDict, *, sweep_flags: Iterable[str] = (),
               sweep_file: str | None = None,
               fixed_overrides: Iterable[str] = ()) -> list[Run]:
  """The runs of a sweep: every sweep-file run combined with every --sweep product.

  `fixed_overrides` are the keys already set by --config.<key> flags, which a sweep may not set
  too (the run's value would silently depend on flag order)."""
  file_runs = load_sweep_file(config, sweep_file) if sweep_file else [{}]
  flag_runs = parse_sweep_flags(config, sweep_flags) or [{}]
  combined = []
  for file_run in file_runs:
    for flag_run in flag_runs:
      both = set(file_run) & set(flag_run)
      if both:
        raise SweepError(f"sweep: {sorted(both)} set both by the sweep file and by --sweep")
      combined.append({**file_run, **flag_run})
  if combined == [{}]:
    raise SweepError("sweep: nothing to sweep; give --sweep=key=v1,v2,... or "
                     "--sweep_file=path.py")
  fixed = {_strip_prefix(key) for key in fixed_overrides}
  for overrides in combined:
    clash = sorted(fixed & set(overrides))
    if clash:
      raise SweepError(f"sweep: {clash} are swept and also set by --config.<key>; drop one")
  seen: dict[str, int] = {}
  for index, overrides in enumerate(combined):
    exact = _exact_text(overrides)
    if exact in seen:
      raise SweepError(f"sweep: runs {seen[exact]} and {index} are the same run ({exact}); "
                       "every run must differ")
    seen[exact] = index
  names = [run_name(overrides) for overrides in combined]
  # Different runs whose readable names coincide (tuple ('a_b',) and ('a', 'b')) get the hash.
  names = [_with_digest(name, overrides) if names.count(name) > 1 else name
           for name, overrides in zip(names, combined)]
  return [Run(overrides, name) for overrides, name in zip(combined, names)]
