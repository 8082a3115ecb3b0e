"""Random-access image sources: sklearn digits, in-memory arrays, TFDS, synthetic images, and
`make_source`, which picks any source (including the file-based ones of folder_source.py,
csv_source.py, medical.py and medmnist_source.py) from `config.data`.

Every source has `len(source)` and `source[index] -> {'image': uint8 (H, W, 3), 'label': int
or int (K,) multi-hot}`, which is the protocol `grain.MapDataset.source` needs. Images are
normalised to 3-channel uint8 here ("decode"), so everything downstream can assume one layout
whatever the dataset stores. For arrays (`to_rgb_uint8`: in-memory data, TFDS records) grayscale
is replicated to RGB, RGBA loses its alpha channel, and 16-bit images are mapped by /257; image
files go through `image_files.py`, which composites alpha and scales 16-bit images by their own
range.

TensorFlow Datasets is imported only inside `TfdsSource`, because accelerator hosts may not have
TensorFlow installed and the training path must import without it.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Protocol, Sequence

import ml_collections
import numpy as np
from PIL import Image

from input_pipeline import csv_source
from input_pipeline import folder_source
from input_pipeline import medical
from input_pipeline import medmnist_source

# Sources a config can name (data.source); 'arrays' is passed in by the caller.
FILE_SOURCES = ("folder", "csv", "medmnist") + medical.MEDICAL_SOURCES
SOURCES = ("digits", "tfds", "arrays", "synthetic", "array_record") + FILE_SOURCES
# 'val' is held out of 'train' for choosing settings without the test split: pretrain and fit
# probes on 'train_minus_val', score on 'val' (docs/results.md, the default job).
DIGITS_SPLITS = ("train", "test", "train_minus_val", "val")
SYNTHETIC_SPLITS = ("train", "test")
DIGITS_NUM_TEST = 450
DIGITS_NUM_VAL = 347   # leaves 1,000 of the 1,347 training images
# Fixed (not config.seed) so that every run, whatever its seed, evaluates on the same examples.
_DIGITS_SPLIT_SEED = 0
_SYNTHETIC_SPLIT_OFFSETS = {"train": 0, "test": 1}


class RandomAccessSource(Protocol):
  """What grain's `MapDataset.source` needs, with the element layout this project uses."""

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> dict[str, Any]:
    ...


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
  """Converts an (H, W), (H, W, 1|2|3|4) image of uint8/uint16/float[0,1] to uint8 (H, W, 3)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
    raise ValueError(f"expected an image of shape (H, W) or (H, W, 1|2|3|4), got {image.shape}")
  if image.dtype == np.uint8:
    pass
  elif image.dtype == np.uint16:
    # 65535 / 257 = 255 exactly: maps the full 16-bit range onto the 8-bit one instead of clipping.
    image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)
  elif np.issubdtype(image.dtype, np.floating):
    image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
  else:
    raise ValueError(f"unsupported image dtype {image.dtype}: expected uint8, uint16 or float")
  channels = image.shape[-1]
  if channels in (1, 2):   # L or LA: drop alpha, replicate luminance
    image = np.repeat(image[..., :1], 3, axis=-1)
  elif channels == 4:      # RGBA: drop alpha
    image = image[..., :3]
  return np.ascontiguousarray(image)


class ArraySource:
  """In-memory images (N, H, W[, C]) with integer labels (N,)."""

  def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim not in (3, 4):
      raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
    if labels.shape != (images.shape[0],):
      raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    self._images = images
    self.labels = labels.astype(np.int64)

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": to_rgb_uint8(self._images[index]), "label": int(self.labels[index])}

  def __repr__(self) -> str:
    return f"ArraySource(num_examples={len(self)}, image_shape={self._images.shape[1:]})"


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  """sklearn's bundled digits as uint8 (1797, 8, 8) in 0..255 and int labels."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  return images, digits.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits_split_indices() -> dict[str, np.ndarray]:
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  _, labels = _digits_arrays()
  train, test = model_selection.train_test_split(
      np.arange(len(labels)), test_size=DIGITS_NUM_TEST, stratify=labels,
      random_state=_DIGITS_SPLIT_SEED)
  train_minus_val, val = model_selection.train_test_split(
      train, test_size=DIGITS_NUM_VAL, stratify=labels[train], random_state=_DIGITS_SPLIT_SEED)
  # Sorted so that the fixed evaluation order does not depend on sklearn's shuffling.
  return {"train": np.sort(train), "test": np.sort(test),
          "train_minus_val": np.sort(train_minus_val), "val": np.sort(val)}


def digits_source(split: str, image_size: int) -> ArraySource:
  """sklearn's 8x8 digits, bilinearly upsampled to image_size and replicated to RGB."""
  if split not in DIGITS_SPLITS:
    raise ValueError(f"unknown digits split {split!r}; allowed: {list(DIGITS_SPLITS)}")
  images, labels = _digits_arrays()
  indices = _digits_split_indices()[split]
  # Resized once here rather than per access: the whole split is a few MB.
  resized = np.stack([
      np.asarray(Image.fromarray(images[i]).resize((image_size, image_size),
                                                   Image.Resampling.BILINEAR))
      for i in indices])
  return ArraySource(resized, labels[indices])


class SyntheticSource:
  """Deterministic images computed from the index, with a class-dependent colour and stripe angle.

  Element `i` has label `i % num_classes`; its random phase and noise come from a generator seeded
  by (split, i), so the same index always yields the same image and no storage is needed.
  """

  def __init__(self, split: str, num_examples: int, image_size: int, num_classes: int):
    if split not in SYNTHETIC_SPLITS:
      raise ValueError(f"unknown synthetic split {split!r}; allowed: {list(SYNTHETIC_SPLITS)}")
    self._split_offset = _SYNTHETIC_SPLIT_OFFSETS[split]
    self._num_examples = num_examples
    self._image_size = image_size
    self._num_classes = num_classes

  def __len__(self) -> int:
    return self._num_examples

  @property
  def labels(self) -> np.ndarray:
    """Every element's label, without rendering images (the evaluation cap stratifies by it)."""
    return np.arange(self._num_examples) % self._num_classes

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < self._num_examples:
      raise IndexError(f"index {index} out of range for {self._num_examples} examples")
    label = index % self._num_classes
    rng = np.random.default_rng([self._split_offset, index])
    fraction = label / self._num_classes
    angle = np.pi * fraction
    coords = np.arange(self._image_size, dtype=np.float32) / self._image_size
    rows, cols = np.meshgrid(coords, coords, indexing="ij")
    stripes = 0.5 + 0.5 * np.sin(
        2 * np.pi * 3 * (rows * np.cos(angle) + cols * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    colour = 0.5 + 0.5 * np.cos(2 * np.pi * (fraction + np.array([0.0, 1 / 3, 2 / 3])))
    image = stripes[..., None] * colour + rng.normal(0.0, 0.05, stripes.shape + (3,))
    return {"image": to_rgb_uint8(np.clip(image, 0.0, 1.0)), "label": label}

  def __repr__(self) -> str:
    return f"SyntheticSource(num_examples={self._num_examples}, image_size={self._image_size})"


class TfdsSource:
  """A `tfds.data_source` split (ArrayRecord), mapped to this project's element layout."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as error:
      raise ValueError(
          f"data.source='tfds' (TFDS dataset {name!r}) needs TensorFlow Datasets, an optional "
          f"part of ssl-jax: pip install 'ssl-jax[tfds]' (or -e '.[tfds]' in a clone). "
          f"Importing it failed: {error}") from None
    if not name:
      raise ValueError("data.source='tfds' needs data.tfds_name (e.g. 'cifar10')")
    try:
      self._data_source = tfds.data_source(name, split=split, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
      close = difflib.get_close_matches(name, tfds.list_builders(), n=5)
      raise ValueError(
          f"unknown TFDS dataset {name!r}; closest TFDS names: {close} "
          "(tfds.list_builders() lists all)") from error
    self._name = name
    self._split = split

  def __len__(self) -> int:
    return len(self._data_source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self._data_source[index]
    # Unlabelled splits (e.g. stl10 'unlabelled') still carry a label feature, set to -1.
    return {"image": to_rgb_uint8(record["image"]), "label": int(record.get("label", -1))}

  def __repr__(self) -> str:
    return f"TfdsSource({self._name!r}, split={self._split!r})"


def make_source(data_config: ml_collections.ConfigDict, split: str, *,
                arrays: tuple[np.ndarray, np.ndarray] | None = None) -> RandomAccessSource:
  """The source for `split` of the dataset `data_config` describes.

  Args:
    data_config: `config.data` (fields: source, tfds_name, data_dir, image_size, num_classes,
      num_train_examples).
    split: a split name of that dataset, e.g. `data_config.train_split`.
    arrays: (images, labels) for `data_config.source == 'arrays'`; in-memory data cannot be named
      by a config, so the caller passes it (and may pass an `ArraySource` to the pipeline instead).
  """
  source = data_config.source
  if source == "digits":
    return digits_source(split, data_config.image_size)
  if source == "tfds":
    return TfdsSource(data_config.tfds_name, split, data_config.data_dir or None)
  if source == "synthetic":
    num_train = data_config.num_train_examples
    num_examples = num_train if split == "train" else num_train // 4
    return SyntheticSource(split, num_examples, data_config.image_size, data_config.num_classes)
  if source in FILE_SOURCES:
    return _checked_file_source(data_config, split)
  if source == "arrays":
    if arrays is None:
      raise ValueError("data.source='arrays' needs make_source(..., arrays=(images, labels))")
    return ArraySource(*arrays)
  if source == "array_record":
    from input_pipeline import array_record_source  # pylint: disable=g-import-not-at-top
    return array_record_source.make_source(data_config, split)
  raise ValueError(f"unknown data.source {source!r}; allowed: {list(SOURCES)}")


def _checked_file_source(data_config: ml_collections.ConfigDict, split: str):
  """A file-based source, checked against the class count the config expects."""
  source = data_config.source
  if source == "folder":
    built = folder_source.folder_source(
        data_config.root, split, train_split=data_config.train_split,
        class_list=data_config.class_list, max_skipped_fraction=data_config.max_skipped_fraction,
        name=data_config.name,
        checked_splits=tuple(s for s in (data_config.test_split, data_config.get("val_split", ""))
                             if s))
  elif source == "csv":
    built = csv_source.csv_source(data_config, split)
  elif source == "medmnist":
    built = medmnist_source.medmnist_source(data_config, split)
  else:
    built = medical.medical_source(data_config, split)
  # num_classes 0 means "whatever the data holds"; otherwise a mismatch would make the
  # evaluation's one-hot labels wrong (e.g. ImageNet-100 without its class list finds 1000).
  if data_config.num_classes > 0 and len(built.classes) != data_config.num_classes:
    hint = (" (give data.class_list: a file with the class folder names to use, one a line)"
            if source == "folder" else "")
    raise ValueError(f"data.num_classes={data_config.num_classes} but the {data_config.name} data "
                     f"under {data_config.root} has {len(built.classes)} classes{hint}")
  multi_hot = built.labels.ndim == 2
  if multi_hot != (data_config.label_type == "multi_label"):
    raise ValueError(
        f"data.label_type={data_config.label_type!r} but the {data_config.name} labels are "
        f"{'multi-hot vectors' if multi_hot else 'one class per image'}; set data.label_type to "
        f"{'multi_label' if multi_hot else 'single (or ordinal)'}")
  return built
