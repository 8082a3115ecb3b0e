"""Small datasets written to disk in the layouts of the real downloads, for the dataset tests."""

from __future__ import annotations

import csv
import os

import numpy as np
from PIL import Image

from input_pipeline import medical

# The real Data_Entry_2017.csv header, including its odd bracketed columns and trailing comma.
CHESTXRAY14_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                      "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                      "OriginalImagePixelSpacing[x", "y]", ""]


def write_image(path: str, array: np.ndarray, **save_kwargs) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **save_kwargs)
  return path


def random_image(rng: np.random.Generator, size: int = 20, channels: int = 3) -> np.ndarray:
  shape = (size, size) if channels == 1 else (size, size, channels)
  return rng.integers(0, 256, shape, dtype=np.uint8)


def chestxray14(root: str, num_patients: int = 24, images_per_patient: int = 2, size: int = 20,
                seed: int = 0) -> list[dict]:
  """Gray PNGs spread over images_00<k>/images/ plus Data_Entry_2017.csv; returns the rows."""
  rng = np.random.default_rng(seed)
  rows = []
  for patient in range(1, num_patients + 1):
    for follow_up in range(images_per_patient):
      name = f"{patient:08d}_{follow_up:03d}.png"
      folder = f"images_{1 + patient % 3:03d}"
      write_image(os.path.join(root, folder, "images", name), random_image(rng, size, 1))
      # Findings cycle so every finding has positives and negatives in any split.
      count = (patient + follow_up) % 3
      findings = [medical.CHESTXRAY14_FINDINGS[(patient * 5 + follow_up + j) % 14]
                  for j in range(count)]
      rows.append({"Image Index": name, "Finding Labels": "|".join(findings) or "No Finding",
                   "Follow-up #": str(follow_up), "Patient ID": str(patient)})
  with open(os.path.join(root, "Data_Entry_2017.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(CHESTXRAY14_HEADER)
    for row in rows:
      writer.writerow([row["Image Index"], row["Finding Labels"], row["Follow-up #"],
                       row["Patient ID"], "58", "M", "PA", "2682", "2749", "0.143", "0.143", ""])
  return rows


def histopathology(root: str, num_patients: int = 6, patches_per_class: int = 3, size: int = 20,
                   seed: int = 0) -> dict[str, int]:
  """<root>/<patient>/<0|1>/<patient>_idx5_x.._y.._class<c>.png; returns {relative path: label}."""
  rng = np.random.default_rng(seed)
  labels = {}
  for patient in range(10250, 10250 + num_patients):
    for label in (0, 1):
      for k in range(patches_per_class):
        relative = os.path.join(str(patient), str(label),
                                f"{patient}_idx5_x{50 * k + 1}_y{label + 1}_class{label}.png")
        write_image(os.path.join(root, relative), random_image(rng, size))
        labels[relative] = label
  return labels


def retinopathy(root: str, num_patients: int = 10, size: int = 24, seed: int = 0
                ) -> dict[str, int]:
  """root/train/<id>_<left|right>.jpeg plus trainLabels.csv; returns {image name: level}."""
  rng = np.random.default_rng(seed)
  levels = {}
  for patient in range(10, 10 + num_patients):
    for eye in ("left", "right"):
      name = f"{patient}_{eye}"
      write_image(os.path.join(root, "train", name + ".jpeg"), random_image(rng, size),
                  quality=90)
      levels[name] = int(rng.integers(0, 5))
  with open(os.path.join(root, "trainLabels.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image", "level"])
    writer.writerows(sorted(levels.items()))
  return levels


def image_folder(root: str, splits=("train", "val"), classes=("cat", "dog", "owl"),
                 per_class: int = 4, size: int = 20, seed: int = 0) -> None:
  """root/<split>/<class>/<k>.png (and one JPEG per class, to mix formats)."""
  rng = np.random.default_rng(seed)
  for split in splits:
    for name in classes:
      for k in range(per_class):
        extension = ".jpg" if k == 0 else ".png"
        write_image(os.path.join(root, split, name, f"{k}{extension}"), random_image(rng, size))


def medmnist_npz(path: str, split_sizes=(12, 4, 6), image_size: int = 28, channels: int = 1,
                 num_classes: int = 3, multi_label: bool = False, seed: int = 0,
                 drop_keys=()) -> dict[str, np.ndarray]:
  """A file in the official MedMNIST layout (np.savez_compressed, as published): uint8 images
  (N, S, S) gray or (N, S, S, 3) RGB, uint8 labels (N, 1) or (N, K) 0/1; returns the arrays."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, count in zip(("train", "val", "test"), split_sizes):
    shape = (count, image_size, image_size) + (() if channels == 1 else (channels,))
    arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
    if multi_label:
      arrays[f"{split}_labels"] = rng.integers(0, 2, (count, num_classes), dtype=np.uint8)
    else:
      # Every class present, in a shuffled order.
      labels = rng.permutation(np.arange(count) % num_classes).astype(np.uint8)
      arrays[f"{split}_labels"] = labels[:, None]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez_compressed(path, **{k: v for k, v in arrays.items() if k not in drop_keys})
  return arrays
