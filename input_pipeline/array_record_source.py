"""ArrayRecord datasets: the record layout, the metadata file, and the random-access reader.

A converted dataset is a directory (`input_pipeline/convert_array_record.py` writes it):

  DIR/metadata.json                          splits, example counts, label layout, how images
                                             were resized and encoded, the source config
  DIR/<split>.array_record                   one file per split, or with --num_shards=N:
  DIR/<split>-00000-of-0000N.array_record

ArrayRecord is grain's native random-access format: reading example i costs one seek, so the
pipeline's global shuffle and per-process sharding work on it as on in-memory arrays, and worker
processes reopen the files by path instead of receiving the data. Records are written with
`group_size:1` (every record its own chunk) because random access reads a whole chunk per record.

One record holds an example as bytes, deliberately without pickle (a dataset directory must never
execute code when read):

  uint32 little-endian  n = length of the label bytes
  n bytes               the label as a raw NumPy array (dtype and shape in metadata.json)
  the rest              the image, PNG or JPEG encoded, RGB

A label is a scalar (single-label or ordinal classes) or a fixed-shape array (multi-label, e.g.
14 multi-hot findings); `ArrayRecordSource` returns a Python int for integer scalars, as every
other source does, and the array otherwise.
"""

from __future__ import annotations

import io
import json
import os
import struct
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
IMAGE_FORMATS = ("png", "jpeg")
# Random access reads one chunk per record; a chunk per record avoids decompressing neighbours.
WRITER_OPTIONS = "group_size:1"
_LABEL_LENGTH = struct.Struct("<I")


def split_file_names(split: str, num_shards: int) -> list[str]:
  """File names (relative to the dataset directory) of one split written in `num_shards` files."""
  if num_shards < 1:
    raise ValueError(f"num_shards must be at least 1, got {num_shards}")
  if num_shards == 1:
    return [f"{split}.array_record"]
  return [f"{split}-{shard:05d}-of-{num_shards:05d}.array_record" for shard in range(num_shards)]


def encode_record(image: np.ndarray, label: np.ndarray, image_format: str,
                  jpeg_quality: int = 95) -> bytes:
  """One record: uint8 (H, W, 3) image encoded as `image_format`, and the label's raw bytes."""
  if image_format not in IMAGE_FORMATS:
    raise ValueError(f"unknown image format {image_format!r}; allowed: {list(IMAGE_FORMATS)}")
  buffer = io.BytesIO()
  if image_format == "png":
    # compress_level 1: PNG is lossless at any level; higher levels cost much encode time for a
    # few per cent of size.
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
  else:
    # 4:2:0 chroma subsampling, as the JPEGs of ImageNet and most downloads already are.
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(jpeg_quality), subsampling=2)
  label_bytes = np.ascontiguousarray(label).tobytes()
  return _LABEL_LENGTH.pack(len(label_bytes)) + label_bytes + buffer.getvalue()


def decode_record(record: bytes, label_dtype: np.dtype, label_shape: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 (H, W, 3) image, label array) of one record."""
  (label_length,) = _LABEL_LENGTH.unpack_from(record, 0)
  label_end = _LABEL_LENGTH.size + label_length
  label = np.frombuffer(record[_LABEL_LENGTH.size:label_end], dtype=label_dtype)
  label = label.reshape(label_shape)
  with Image.open(io.BytesIO(record[label_end:])) as encoded:
    image = np.asarray(encoded.convert("RGB"))
  return image, label


def read_metadata(root: str) -> dict[str, Any]:
  """metadata.json of a converted dataset, with a clear error when `root` is not one."""
  if not root:
    raise ValueError("data.source='array_record' needs data.root: the directory "
                     "input_pipeline/convert_array_record.py wrote")
  path = os.path.join(root, METADATA_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} does not exist: data.root must be a directory written by "
        "`python -m input_pipeline.convert_array_record`")
  with open(path) as file:
    metadata = json.load(file)
  if metadata.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path} has format_version {metadata.get('format_version')!r}; this code "
                     f"reads version {FORMAT_VERSION}")
  return metadata


class ArrayRecordSource:
  """One split of a converted dataset: `source[i] -> {'image': uint8 (H, W, 3), 'label'}`.

  Picklable (grain worker processes get the paths and reopen the files).
  """

  def __init__(self, root: str, split: str):
    # Imported here so the rest of the input pipeline imports without array_record installed.
    import grain  # pylint: disable=g-import-not-at-top
    metadata = read_metadata(root)
    splits = metadata["splits"]
    if split not in splits:
      raise ValueError(f"split {split!r} is not in the ArrayRecord dataset {root}; it has "
                       f"{sorted(splits)}")
    paths = [os.path.join(root, name) for name in splits[split]["files"]]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
      raise FileNotFoundError(f"ArrayRecord files listed in {root}/{METADATA_FILE} are missing: "
                              f"{missing}")
    self._root = root
    self._split = split
    self._label_dtype = np.dtype(metadata["label"]["dtype"])
    self._label_shape = tuple(metadata["label"]["shape"])
    self._data_source = grain.sources.ArrayRecordDataSource(paths)
    if len(self._data_source) != splits[split]["num_examples"]:
      raise ValueError(
          f"{root}: split {split!r} has {len(self._data_source)} records but metadata.json says "
          f"{splits[split]['num_examples']} (an interrupted conversion?)")
    self.metadata = metadata

  def __len__(self) -> int:
    return len(self._data_source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    image, label = decode_record(self._data_source[int(index)], self._label_dtype,
                                 self._label_shape)
    if label.ndim == 0 and np.issubdtype(label.dtype, np.integer):
      return {"image": image, "label": int(label)}
    return {"image": image, "label": label.copy()}   # frombuffer arrays are read-only

  def __repr__(self) -> str:
    return f"ArrayRecordSource({self._root!r}, split={self._split!r}, num_examples={len(self)})"


def make_source(data_config: ml_collections.ConfigDict, split: str) -> ArrayRecordSource:
  """The `data.source='array_record'` source, checked against the config that reads it."""
  source = ArrayRecordSource(data_config.root, split)
  converted_classes = source.metadata["num_classes"]
  if converted_classes != data_config.num_classes:
    raise ValueError(
        f"the ArrayRecord dataset {data_config.root} has {converted_classes} classes but "
        f"data.num_classes is {data_config.num_classes}: use the preset it was converted from "
        f"({source.metadata['source'].get('name', '?')!r})")
  return source
