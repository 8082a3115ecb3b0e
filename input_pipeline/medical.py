"""The medical datasets downloaded by hand, read from their original layout.

- NIH ChestX-ray14 (Wang et al. 2017): PNGs anywhere below `data.root` (the download spreads them
  over `images_001/images/` ... `images_012/images/`; one flat `images/` works too) plus
  `Data_Entry_2017.csv` with columns 'Image Index' (file name), 'Finding Labels' (findings
  separated by '|', or 'No Finding') and 'Patient ID'. Label: multi-hot over the 14 findings in
  `CHESTXRAY14_FINDINGS` order ('No Finding' is all zeros).
- Breast cancer histopathology, IDC (Janowczyk & Madabhushi 2016): 50x50 patches in
  `<root>/<patient>/<0|1>/*.png`, 1 = invasive ductal carcinoma. Label: binary.
- Diabetic retinopathy (Kaggle 2015): images anywhere below `data.root` plus `trainLabels.csv`
  with columns 'image' (file name without extension, e.g. '10_left') and 'level' (grade 0-4).
  The patient is the name before '_left' / '_right', so both eyes stay in one split. Label:
  ordinal grade.

All three are split patient-wise (`patient_split.py`, `data.test_fraction`, `data.split_seed`).
Listing and parsing are cached per root: a run builds each split's source several times.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from input_pipeline import csv_source
from input_pipeline import file_list_source
from input_pipeline import image_files

CHESTXRAY14_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia")
CHESTXRAY14_NO_FINDING = "No Finding"
RETINOPATHY_GRADES = ("0", "1", "2", "3", "4")
HISTOPATHOLOGY_CLASSES = ("0", "1")
_EYE_SUFFIXES = ("_left", "_right")


def _image_index(root: str, key) -> dict[str, list[str]]:
  """{key(file name): [paths relative to root]} for every image file below root."""
  index: dict[str, list[str]] = {}
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    for name in sorted(filenames):
      if image_files.is_image_file(name):
        index.setdefault(key(name), []).append(os.path.relpath(os.path.join(dirpath, name), root))
  return index


def _lookup(index: dict[str, list[str]], names: list[str], root: str, listed_in: str
            ) -> list[str]:
  """The file of each listed name; a name without a file, or with two (the CSV could not say
  which one it means), is an error. Files the CSV does not list (e.g. a test set) are ignored."""
  missing = [name for name in names if name not in index]
  if missing:
    raise ValueError(f"{len(missing)} of the {len(names)} images listed in {listed_in} are not "
                     f"below {root}, e.g. {missing[:10]}")
  ambiguous = [name for name in names if len(index[name]) > 1]
  if ambiguous:
    raise ValueError(f"{len(ambiguous)} images listed in {listed_in} have several files below "
                     f"{root}, e.g. {ambiguous[0]!r}: {index[ambiguous[0]]}; keep one")
  return [index[name][0] for name in names]


@functools.lru_cache(maxsize=4)
def read_chestxray14(root: str, labels_csv: str) -> csv_source.LabelledFiles:
  csv_path = csv_source.resolve(root, labels_csv)
  rows = csv_source.read_csv(csv_path, ("Image Index", "Finding Labels", "Patient ID"))
  position = {finding: i for i, finding in enumerate(CHESTXRAY14_FINDINGS)}
  labels = np.zeros((len(rows), len(CHESTXRAY14_FINDINGS)), np.int64)
  for row_number, row in enumerate(rows):
    for finding in (f.strip() for f in row["Finding Labels"].split("|")):
      if finding == CHESTXRAY14_NO_FINDING:
        continue
      if finding not in position:
        raise ValueError(f"{csv_path} row {row_number + 2}: unknown finding {finding!r}; allowed: "
                         f"{list(CHESTXRAY14_FINDINGS) + [CHESTXRAY14_NO_FINDING]}")
      labels[row_number, position[finding]] = 1
  paths = _lookup(_image_index(root, lambda name: name), [r["Image Index"] for r in rows], root,
                  csv_path)
  return csv_source.LabelledFiles(root, tuple(paths), labels,
                                  tuple(r["Patient ID"] for r in rows), CHESTXRAY14_FINDINGS)


def retinopathy_patient(image_name: str) -> str:
  """'10_left' -> '10': both eyes of a patient share the prefix."""
  for suffix in _EYE_SUFFIXES:
    if image_name.endswith(suffix):
      return image_name[:-len(suffix)]
  return image_name


@functools.lru_cache(maxsize=4)
def read_retinopathy(root: str, labels_csv: str) -> csv_source.LabelledFiles:
  csv_path = csv_source.resolve(root, labels_csv)
  rows = csv_source.read_csv(csv_path, ("image", "level"))
  levels = []
  for row_number, row in enumerate(rows):
    if row["level"] not in RETINOPATHY_GRADES:
      raise ValueError(f"{csv_path} row {row_number + 2}: level {row['level']!r} is not a grade "
                       f"{list(RETINOPATHY_GRADES)}")
    levels.append(int(row["level"]))
  names = [row["image"] for row in rows]
  paths = _lookup(_image_index(root, lambda name: os.path.splitext(name)[0]), names, root,
                  csv_path)
  return csv_source.LabelledFiles(root, tuple(paths), np.array(levels, np.int64),
                                  tuple(retinopathy_patient(n) for n in names),
                                  RETINOPATHY_GRADES)


@functools.lru_cache(maxsize=4)
def read_histopathology(root: str) -> csv_source.LabelledFiles:
  paths, labels, groups = [], [], []
  patients = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
  if not patients:
    raise ValueError(f"data.root={root} has no patient folders (expected "
                     "<root>/<patient>/<0|1>/*.png)")
  for patient in patients:
    patient_dir = os.path.join(root, patient)
    class_dirs = [c for c in HISTOPATHOLOGY_CLASSES if os.path.isdir(os.path.join(patient_dir, c))]
    if not class_dirs:
      raise ValueError(f"patient folder {patient_dir} has neither a 0/ nor a 1/ sub-folder "
                       "(expected <root>/<patient>/<0|1>/*.png)")
    for label_name in class_dirs:
      class_dir = os.path.join(patient_dir, label_name)
      images = sorted(n for n in os.listdir(class_dir) if image_files.is_image_file(n))
      if not images:
        raise ValueError(f"folder {class_dir} holds no image files")
      paths.extend(os.path.join(patient, label_name, n) for n in images)
      labels.extend([int(label_name)] * len(images))
      groups.extend([patient] * len(images))
  return csv_source.LabelledFiles(root, tuple(paths), np.array(labels, np.int64), tuple(groups),
                                  HISTOPATHOLOGY_CLASSES)


def medical_source(data_config, split: str) -> file_list_source.ImageListSource:
  """`split` ('train' | 'test') of the medical dataset `data_config.source` names."""
  source = data_config.source
  root = file_list_source.check_root(data_config.root, data_config.name)
  if source == "chestxray14":
    files = read_chestxray14(root, data_config.labels_csv or "Data_Entry_2017.csv")
  elif source == "retinopathy":
    files = read_retinopathy(root, data_config.labels_csv or "trainLabels.csv")
  elif source == "histopathology":
    files = read_histopathology(root)
  else:
    raise ValueError(f"unknown medical source {source!r}; allowed: {list(MEDICAL_SOURCES)}")
  return csv_source.split_source(files, split, test_fraction=data_config.test_fraction,
                                 split_seed=data_config.split_seed,
                                 max_skipped_fraction=data_config.max_skipped_fraction,
                                 name=data_config.name)


MEDICAL_SOURCES = ("chestxray14", "histopathology", "retinopathy")
