"""Image files listed in a CSV of labels, split patient-wise into train and test.

The generic form (`data.source='csv'`): `data.labels_csv` (a path relative to `data.root`, or
absolute) has a column of image paths (`data.csv_path_column`, relative to the root), one or more
label columns (`data.csv_label_columns`, comma-separated) and optionally a patient or group column
(`data.csv_patient_column`):

- one label column: a single label per image, integers used as they are, anything else mapped
  to the index of its value among the sorted distinct values;
- several label columns: a multi-hot label, each column holding 0 or 1.

Without a patient column every row is its own group. The split (`patient_split.py`) is seeded by
`data.split_seed` and puts `data.test_fraction` of the patients in 'test'. ChestX-ray14 and
retinopathy (`medical.py`) are this with their own CSV parsing.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
from typing import Sequence

import numpy as np

from input_pipeline import file_list_source
from input_pipeline import patient_split


@dataclasses.dataclass(frozen=True)
class LabelledFiles:
  """A whole dataset before splitting: paths relative to `root`, labels, patient of each file."""
  root: str
  relative_paths: tuple[str, ...]
  labels: np.ndarray            # (N,) or (N, K) integers
  groups: tuple[str, ...]       # patient (or group) of each file
  classes: tuple[str, ...]      # names of the label values (single) or of the K labels (multi)


def read_csv(path: str, required_columns: Sequence[str]) -> list[dict[str, str]]:
  """The rows of a CSV with a header, after checking it has `required_columns`."""
  if not os.path.isfile(path):
    raise ValueError(f"label file {path} does not exist")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in required_columns if c not in columns]
    if missing:
      raise ValueError(f"{path} has no column(s) {missing}; its columns are {columns}")
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
  if not rows:
    raise ValueError(f"{path} has a header but no rows")
  return rows


def resolve(root: str, path: str) -> str:
  return path if os.path.isabs(path) else os.path.join(root, path)


def check_files_exist(root: str, relative_paths: Sequence[str], listed_in: str, *,
                      allow_outside_root: bool = False) -> None:
  """Every listed image is a file, and (unless `allow_outside_root`) lies under `root` once
  '..' and links are resolved: a label file must not make a run read arbitrary files."""
  missing = [p for p in relative_paths if not os.path.isfile(os.path.join(root, p))]
  if missing:
    raise ValueError(f"{len(missing)} of the {len(relative_paths)} images listed in {listed_in} "
                     f"are not under {root}, e.g. {missing[:10]}")
  if allow_outside_root:
    return
  real_root = os.path.realpath(root)
  outside = [p for p in relative_paths
             if os.path.commonpath([real_root, os.path.realpath(os.path.join(root, p))])
             != real_root]
  if outside:
    raise ValueError(f"{len(outside)} of the images listed in {listed_in} lie outside data.root="
                     f"{root} (e.g. {outside[:5]}); set --config.data.allow_outside_root=True "
                     "if that is intended")


def _single_labels(values: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
  try:
    labels = np.array([int(v) for v in values], np.int64)
    if labels.min() < 0:
      raise ValueError(f"negative label {labels.min()} in the label column")
    return labels, tuple(str(i) for i in range(int(labels.max()) + 1))
  except ValueError as error:
    if "negative" in str(error):
      raise
    classes = tuple(sorted(set(values)))
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[v] for v in values], np.int64), classes


def _binary(value: str, column: str, row: int) -> int:
  try:
    number = float(value)
  except ValueError:
    number = -1.0
  if number not in (0.0, 1.0):
    raise ValueError(f"label column {column!r} must hold 0 or 1, row {row} holds {value!r}")
  return int(number)


@functools.lru_cache(maxsize=8)
def read_labelled_csv(root: str, labels_csv: str, path_column: str, label_columns: str,
                      patient_column: str, allow_outside_root: bool = False) -> LabelledFiles:
  """The generic CSV dataset (see the module docstring)."""
  columns = [c.strip() for c in label_columns.split(",") if c.strip()]
  if not path_column or not columns:
    raise ValueError("data.csv_path_column and data.csv_label_columns must name CSV columns")
  csv_path = resolve(root, labels_csv)
  rows = read_csv(csv_path, [path_column, *columns] + ([patient_column] if patient_column else []))
  paths = tuple(row[path_column] for row in rows)
  check_files_exist(root, paths, csv_path, allow_outside_root=allow_outside_root)
  if len(columns) == 1:
    labels, classes = _single_labels([row[columns[0]] for row in rows])
  else:
    labels = np.array([[_binary(row[c], c, i) for c in columns] for i, row in enumerate(rows)],
                      np.int64)
    classes = tuple(columns)
  groups = (tuple(row[patient_column] for row in rows) if patient_column
            else tuple(str(i) for i in range(len(rows))))
  return LabelledFiles(root, paths, labels, groups, classes)


def split_source(files: LabelledFiles, split: str, *, test_fraction: float, split_seed: int,
                 max_skipped_fraction: float, name: str) -> file_list_source.ImageListSource:
  """The patient-wise `split` ('train' | 'test') of `files` as a source."""
  indices = patient_split.select_split(split, files.groups, test_fraction, split_seed)
  return file_list_source.ImageListSource(
      files.root, [files.relative_paths[i] for i in indices], files.labels[indices],
      max_skipped_fraction=max_skipped_fraction,
      description=f"images of the {name} split {split!r}", classes=files.classes)


def csv_source(data_config, split: str) -> file_list_source.ImageListSource:
  """`split` of the generic CSV dataset `data_config` describes."""
  root = file_list_source.check_root(data_config.root, data_config.name)
  files = read_labelled_csv(root, data_config.labels_csv, data_config.csv_path_column,
                            data_config.csv_label_columns, data_config.csv_patient_column,
                            data_config.allow_outside_root)
  return split_source(files, split, test_fraction=data_config.test_fraction,
                      split_seed=data_config.split_seed,
                      max_skipped_fraction=data_config.max_skipped_fraction,
                      name=data_config.name)
