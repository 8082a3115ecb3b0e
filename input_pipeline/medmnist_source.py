"""MedMNIST v2 and MedMNIST+ (Yang et al. 2023, medmnist.com): the official `.npz` files as
published, with their official train / val / test splits.

Which file. `data.root` is either the `.npz` file itself or the directory holding the downloads;
in a directory the file is MedMNIST's own name for the size asked for: `<flag>.npz` at 28 px and
`<flag>_<size>.npz` at 64, 128 or 224 px (MedMNIST+), with flag = `data.medmnist_flag`
('breastmnist', ...) and size = `data.image_size`. A directory of several sizes therefore serves
any of them by changing `--config.data.image_size` alone.

No resizing. The file's images must have exactly `data.image_size` pixels a side, otherwise the
source stops with an error naming the file, the size found and the size expected. MedMNIST+
resized each size from the source images, so 28 px images upsampled to 64 are not the 64 px
benchmark, and a figure reported under the 64 px name would silently mean something else.

What is in a file (checked when a split is read; anything else is an error naming the file and
the key):

  {train,val,test}_images  uint8 (N, H, W) gray or (N, H, W, 3) RGB, H = W
  {train,val,test}_labels  uint8 (N, 1): one class (binary, multi-class, ordinal grade), or
                           (N, K) 0/1: multi-label (ChestMNIST's 14 findings)

Elements are this project's layout: gray images are replicated to 3 channels (per element, so a
gray split takes a third of the memory an RGB copy would); labels are an int (one class) or an
int32 (K,) 0/1 vector (multi-label). The label range is checked against the preset's classes.

Memory. The official files are deflate-compressed zip members, which cannot be memory-mapped, so
a split is decompressed into memory once per process and cached (worker processes reload it from
the file instead of receiving a pickled copy). The 28 px files are 0.5-190 MB; the 224 px files of
the large sets (PathMNIST, OCTMNIST, TissueMNIST, ChestMNIST) hold tens of GB: convert those with
`python -m input_pipeline.convert_array_record` and train from the ArrayRecord copy.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
# Sizes MedMNIST publishes; 28 is MedMNIST v2, the others MedMNIST+.
IMAGE_SIZES = (28, 64, 128, 224)
DOWNLOAD_HINT = ("download it from https://medmnist.com (every size: "
                 "https://zenodo.org/records/10519652)")

# The label names of each 2D dataset, in label order (MedMNIST's medmnist/info.py); they are the
# class list a run writes to classes.txt. The task of each set is in its preset
# (configs/common.py).
CLASS_NAMES = {
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma",
                  "colorectal adenocarcinoma epithelium"),
    "chestmnist": ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                   "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema",
                   "fibrosis", "pleural", "hernia"),
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                   "melanocytic nevi", "vascular lesions"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast",
                   "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
                   "lymphocyte", "monocyte", "neutrophil", "platelet"),
    "tissuemnist": ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                    "Glomerular endothelial cells", "Interstitial endothelial cells",
                    "Leukocytes", "Podocytes", "Proximal Tubule Segments",
                    "Thick Ascending Limb"),
    "organamnist": ("bladder", "femur-left", "femur-right", "heart", "kidney-left",
                    "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen"),
    "organcmnist": ("bladder", "femur-left", "femur-right", "heart", "kidney-left",
                    "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen"),
    "organsmnist": ("bladder", "femur-left", "femur-right", "heart", "kidney-left",
                    "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen"),
}


class MedMNISTFileError(ValueError):
  """A MedMNIST file that is missing or does not hold what the config expects."""


def file_name(flag: str, image_size: int) -> str:
  """MedMNIST's name of the `image_size` px file of `flag`, e.g. 'breastmnist.npz' (28 px),
  'breastmnist_64.npz'."""
  return f"{flag}.npz" if image_size == 28 else f"{flag}_{image_size}.npz"


def npz_path(root: str, flag: str, image_size: int) -> str:
  """The file `data.root` names: itself if it is a file (or ends in .npz), otherwise MedMNIST's
  file name for `flag` at `image_size` inside it."""
  if flag not in CLASS_NAMES:
    raise ValueError(f"data.medmnist_flag={flag!r} is not a 2D MedMNIST dataset; allowed: "
                     f"{sorted(CLASS_NAMES)}")
  if not root:
    raise ValueError(f"data.root is empty: give the directory holding {file_name(flag, 28)} (or "
                     f"the .npz file itself), e.g. --config.data.root=/data/medmnist")
  root = os.path.abspath(os.path.expanduser(root))
  if os.path.isfile(root) or root.endswith(".npz"):
    return root
  if image_size not in IMAGE_SIZES:
    raise ValueError(f"data.image_size={image_size}: MedMNIST files come in {list(IMAGE_SIZES)} "
                     "px and are used at their own size (no resizing)")
  return os.path.join(root, file_name(flag, image_size))


@functools.lru_cache(maxsize=6)
def _read_split(path: str, split: str, signature: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) as stored; cached per process. `signature` (mtime, size) makes a file
  rewritten in place a new cache entry."""
  del signature
  with np.load(path, allow_pickle=False) as npz:
    expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    missing = [key for key in expected if key not in npz.files]
    if missing:
      raise MedMNISTFileError(
          f"{path} is not a MedMNIST file: key(s) {missing} missing; it holds {sorted(npz.files)} "
          f"and a MedMNIST file holds {expected}")
    return npz[f"{split}_images"], npz[f"{split}_labels"]


def _check_images(images: np.ndarray, path: str, key: str, image_size: int) -> None:
  if images.dtype != np.uint8:
    raise MedMNISTFileError(f"{path}: {key} has dtype {images.dtype}; MedMNIST images are uint8")
  if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))):
    raise MedMNISTFileError(f"{path}: {key} has shape {images.shape}; expected (N, H, W) gray or "
                            "(N, H, W, 3) RGB")
  height, width = images.shape[1:3]
  if height != width:
    raise MedMNISTFileError(f"{path}: {key} holds {height}x{width} images; MedMNIST images are "
                            "square")
  if height != image_size:
    raise MedMNISTFileError(
        f"{path}: {key} holds {height} px images but data.image_size is {image_size}; MedMNIST "
        f"images are used at their own size, not resized: set --config.data.image_size={height}, "
        f"or use the dataset's {image_size} px file")


def _checked_labels(labels: np.ndarray, path: str, key: str, num_images: int,
                    num_classes: int, multi_label: bool) -> np.ndarray:
  """Labels as int32 (N,) (one class) or (N, K) 0/1 (multi-label), checked against the preset."""
  if not np.issubdtype(labels.dtype, np.integer):
    raise MedMNISTFileError(f"{path}: {key} has dtype {labels.dtype}; MedMNIST labels are integers")
  if labels.ndim == 1:
    labels = labels[:, None]
  if labels.ndim != 2 or labels.shape[0] != num_images:
    raise MedMNISTFileError(f"{path}: {key} has shape {labels.shape}; expected ({num_images}, 1) "
                            f"or ({num_images}, K), one row per image")
  if multi_label:
    if labels.shape[1] != num_classes:
      raise MedMNISTFileError(
          f"{path}: {key} has {labels.shape[1]} label column(s) but data.label_type="
          f"'multi_label' with data.num_classes={num_classes} expects {num_classes} 0/1 columns")
    bad = np.setdiff1d(np.unique(labels), [0, 1])
    if bad.size:
      raise MedMNISTFileError(f"{path}: {key} holds values {bad[:10].tolist()}; multi-label "
                              "targets must be 0 or 1")
    return labels.astype(np.int32)
  if labels.shape[1] != 1:
    raise MedMNISTFileError(
        f"{path}: {key} has {labels.shape[1]} label columns (multi-label) but the config expects "
        "one class per image; set data.label_type='multi_label' (and data.num_classes to the "
        "number of columns)")
  labels = labels[:, 0].astype(np.int64)
  outside = np.unique(labels[(labels < 0) | (labels >= num_classes)])
  if outside.size:
    raise MedMNISTFileError(
        f"{path}: {key} holds label(s) {outside[:10].tolist()} outside the {num_classes} classes "
        f"0..{num_classes - 1} of the config (data.num_classes)")
  return labels.astype(np.int32)


class MedMNISTSource:
  """One split of a MedMNIST file: `source[i] -> {'image': uint8 (H, W, 3), 'label'}`.

  The instance holds the path and the labels only; images come from the per-process cache of
  `_read_split`, so a pickled source (grain worker processes) re-reads the file instead of
  carrying a copy of the split.
  """

  def __init__(self, path: str, split: str, *, image_size: int, classes: tuple[str, ...],
               multi_label: bool):
    if split not in SPLITS:
      raise ValueError(f"unknown MedMNIST split {split!r}; allowed: {list(SPLITS)}")
    if not os.path.isfile(path):
      raise MedMNISTFileError(f"MedMNIST file {path} does not exist; {DOWNLOAD_HINT} into "
                              f"{os.path.dirname(path)}, or point data.root at the file")
    self.path = path
    self.split = split
    self.image_size = image_size
    self.classes = tuple(classes)
    self.multi_label = multi_label
    stat = os.stat(path)
    self._signature = (stat.st_mtime_ns, stat.st_size)
    images, labels = self._arrays()
    # Checked at every construction (cheap: the arrays are cached), so the first source a run
    # builds, the training split's, stops a bad file before any device work.
    _check_images(images, path, f"{split}_images", image_size)
    self.labels = _checked_labels(labels, path, f"{split}_labels", len(images), len(classes),
                                  multi_label)

  def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
    return _read_split(self.path, self.split, self._signature)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    images, _ = self._arrays()
    image = images[int(index)]
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    label = self.labels[int(index)]
    return {"image": np.ascontiguousarray(image),
            "label": label.copy() if self.multi_label else int(label)}

  def __repr__(self) -> str:
    return f"MedMNISTSource({self.path!r}, split={self.split!r}, num_examples={len(self)})"


def medmnist_source(data_config, split: str) -> MedMNISTSource:
  """`split` ('train' | 'val' | 'test') of the MedMNIST file `data_config` names."""
  flag = data_config.medmnist_flag
  path = npz_path(data_config.root, flag, data_config.image_size)
  classes = CLASS_NAMES[flag]
  if data_config.num_classes not in (0, len(classes)):
    raise ValueError(f"data.num_classes={data_config.num_classes} but {flag} has "
                     f"{len(classes)} classes")
  return MedMNISTSource(path, split, image_size=data_config.image_size, classes=classes,
                        multi_label=data_config.label_type == "multi_label")
