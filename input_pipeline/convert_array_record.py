r"""Converts a configured dataset's splits to ArrayRecord, resized and re-encoded, for fast input.

  python -m input_pipeline.convert_array_record --config=configs/moco_v2.py:cifar10 \
      --output=/data/cifar10_ar --format=png
  python -m input_pipeline.convert_array_record --config=configs/moco_v2.py:imagenet \
      --output=/data/imagenet_ar --splits=train,validation --jpeg_quality=90 --num_shards=64

then train from it with the same preset:

  python main.py --config=configs/moco_v2.py:imagenet --config.data.source=array_record \
      --config.data.root=/data/imagenet_ar

Reads each split through `sources.make_source(config.data, split)` (so any source the configs
name works: TFDS, image folders, CSV lists), makes every image RGB uint8, shrinks it so its
shorter side is --shorter_side (default: 1.15 x data.image_size, the usual 256-for-224 margin
that random-resized crops and the eval centre crop need; images already smaller are kept as
they are, because enlarging adds bytes but no detail), re-encodes it (PNG: lossless; JPEG:
--jpeg_quality) and writes `OUTPUT/<split>.array_record` plus `OUTPUT/metadata.json`. Converting
more splits into an existing directory adds them to its metadata if the encoding settings match.

Decoding a 256 px JPEG instead of a full-size download is what makes the host side fast: see
benchmarks/input.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

from absl import app, flags, logging
import ml_collections
import numpy as np
from PIL import Image

from input_pipeline import array_record_source
from input_pipeline import sources

SHORTER_SIDE_MARGIN = 1.15
# Encoding and resizing release the GIL in PIL, so a few threads convert several times faster.
_DEFAULT_THREADS = min(8, os.cpu_count() or 1)


def default_shorter_side(image_size: int) -> int:
  return int(math.ceil(SHORTER_SIDE_MARGIN * image_size))


def resize_shorter_side(image: np.ndarray, shorter_side: int) -> np.ndarray:
  """Shrinks uint8 (H, W, 3) so min(H, W) == shorter_side, keeping the aspect ratio; smaller
  images are returned unchanged."""
  height, width = image.shape[:2]
  if min(height, width) <= shorter_side:
    return image
  scale = shorter_side / min(height, width)
  new_size = (max(1, round(width * scale)), max(1, round(height * scale)))   # PIL: (W, H)
  if height <= width:   # the shorter side is exact, not off by a rounding
    new_size = (new_size[0], shorter_side)
  else:
    new_size = (shorter_side, new_size[1])
  # BICUBIC with PIL's antialiasing support for a large reduction, as dataset preprocessing does.
  return np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.BICUBIC))


def _label_array(label: Any) -> np.ndarray:
  label = np.asarray(label)
  if np.issubdtype(label.dtype, np.integer):
    return label.astype(np.int64)
  if np.issubdtype(label.dtype, np.floating) or label.dtype == np.bool_:
    return label.astype(np.float32)
  raise ValueError(f"labels must be integers, floats or booleans, got dtype {label.dtype}")


def _encode_example(element: dict[str, Any], shorter_side: int, image_format: str,
                    jpeg_quality: int) -> tuple[bytes, np.ndarray]:
  image = sources.to_rgb_uint8(element["image"])
  image = resize_shorter_side(image, shorter_side)
  label = _label_array(element["label"])
  return array_record_source.encode_record(image, label, image_format, jpeg_quality), label


def convert_split(source: sources.RandomAccessSource, output_dir: str, split: str, *,
                  shorter_side: int, image_format: str = "png", jpeg_quality: int = 95,
                  num_shards: int = 1, max_examples: int = -1,
                  num_threads: int = _DEFAULT_THREADS) -> dict[str, Any]:
  """Writes one split; returns its metadata entry {'num_examples', 'files', 'label'}.

  Examples are written in source order (example i of the split is record i), split evenly into
  `num_shards` contiguous files.
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  if image_format not in array_record_source.IMAGE_FORMATS:
    raise ValueError(f"unknown --format {image_format!r}; allowed: "
                     f"{list(array_record_source.IMAGE_FORMATS)}")
  if not 1 <= jpeg_quality <= 100:
    raise ValueError(f"--jpeg_quality must be in [1, 100], got {jpeg_quality}")
  if shorter_side < 1:
    raise ValueError(f"--shorter_side must be positive, got {shorter_side}")
  num_examples = len(source) if max_examples < 0 else min(len(source), max_examples)
  if num_examples == 0:
    raise ValueError(f"split {split!r} has no examples to convert")
  os.makedirs(output_dir, exist_ok=True)
  file_names = array_record_source.split_file_names(split, num_shards)
  bounds = np.linspace(0, num_examples, num_shards + 1).round().astype(int)
  label_layout = None

  def encode(index: int) -> tuple[bytes, np.ndarray]:
    return _encode_example(source[index], shorter_side, image_format, jpeg_quality)

  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    for file_name, start, stop in zip(file_names, bounds[:-1], bounds[1:]):
      writer = array_record_module.ArrayRecordWriter(
          os.path.join(output_dir, file_name), array_record_source.WRITER_OPTIONS)
      try:
        # map() keeps the order; it encodes ahead on the pool while the writer appends.
        for offset, (record, label) in enumerate(pool.map(encode, range(start, stop))):
          layout = {"dtype": label.dtype.str, "shape": list(label.shape)}
          if label_layout is None:
            label_layout = layout
          elif layout != label_layout:
            raise ValueError(f"example {start + offset} of split {split!r} has a label of "
                             f"{layout}, unlike the first example's {label_layout}")
          writer.write(record)
          if (start + offset + 1) % 10_000 == 0:
            logging.info("%s: %d / %d examples", split, start + offset + 1, num_examples)
      finally:
        writer.close()
  return {"num_examples": num_examples, "files": file_names, "label": label_layout}


def _label_type(label_layout: dict[str, Any], data_config: ml_collections.ConfigDict) -> str:
  """'multi_label' for vector labels; otherwise the preset's type ('single' or 'ordinal')."""
  if label_layout["shape"]:
    return "multi_label"
  return str(data_config.get("label_type", "single"))


def convert(config: ml_collections.ConfigDict, output_dir: str, splits: Sequence[str], *,
            shorter_side: int | None = None, image_format: str = "png", jpeg_quality: int = 95,
            num_shards: int = 1, max_examples: int = -1, num_threads: int = _DEFAULT_THREADS,
            split_sources: Mapping[str, sources.RandomAccessSource] | None = None
            ) -> dict[str, Any]:
  """Converts `splits` of the dataset `config.data` names; writes and returns the metadata.

  `split_sources` overrides the source of some splits (in-memory data, which a config cannot
  name); the config still provides the dataset's name, classes and image size.
  """
  split_sources = split_sources or {}
  if not splits:
    raise ValueError("no splits to convert")
  data_config = config.data
  if data_config.source == "array_record":
    raise ValueError("the config already reads an ArrayRecord dataset; point it at the "
                     "original source to convert")
  shorter_side = shorter_side or default_shorter_side(data_config.image_size)
  settings = {"format_version": array_record_source.FORMAT_VERSION,
              "image_format": image_format,
              "jpeg_quality": jpeg_quality if image_format == "jpeg" else None,
              "shorter_side": shorter_side}
  metadata_path = os.path.join(output_dir, array_record_source.METADATA_FILE)
  metadata = dict(settings, splits={})
  if os.path.isfile(metadata_path):
    existing = array_record_source.read_metadata(output_dir)
    differing = {key: (existing.get(key), value) for key, value in settings.items()
                 if existing.get(key) != value}
    if differing:
      raise ValueError(f"{metadata_path} was written with other settings (existing, requested): "
                       f"{differing}; convert into a new directory")
    metadata = existing

  for split in splits:
    if split in split_sources:
      source = split_sources[split]
    else:
      source = sources.make_source(data_config, split)
    logging.info("Converting %s split %r (%d examples) to %s", data_config.name, split,
                 len(source), output_dir)
    entry = convert_split(source, output_dir, split, shorter_side=shorter_side,
                          image_format=image_format, jpeg_quality=jpeg_quality,
                          num_shards=num_shards, max_examples=max_examples,
                          num_threads=num_threads)
    known_layout = metadata.get("label")
    if known_layout is not None and known_layout != entry["label"]:
      raise ValueError(f"split {split!r} has labels of {entry['label']}, the other splits "
                       f"{known_layout}")
    metadata["label"] = entry.pop("label")
    metadata["splits"][split] = entry

  metadata.update(
      label_type=_label_type(metadata["label"], data_config),
      num_classes=int(data_config.num_classes),
      image_size=int(data_config.image_size),
      source=data_config.to_dict())
  # Written last, so a directory with metadata.json holds complete splits.
  with open(metadata_path, "w") as file:
    json.dump(metadata, file, indent=2, default=list)
  return metadata


def _define_flags() -> None:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file(
      "config", None, "The dataset's config, e.g. configs/moco_v2.py:cifar10 (its data field is "
      "read; --config.data.<field>=... overrides work).", lock_config=True)
  flags.DEFINE_string("output", None, "Directory to write <split>.array_record and "
                      "metadata.json to.")
  flags.DEFINE_list("splits", None, "Splits to convert (default: data.train_split and "
                    "data.test_split).")
  flags.DEFINE_integer("shorter_side", 0, "Shrink images so the shorter side is this many "
                       "pixels (0: ceil(1.15 x data.image_size)); smaller images are kept.")
  flags.DEFINE_enum("format", "jpeg", list(array_record_source.IMAGE_FORMATS),
                    "png: lossless; jpeg: smaller and faster to decode.")
  flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality, 1-100.")
  flags.DEFINE_integer("num_shards", 1, "Files per split.")
  flags.DEFINE_integer("max_examples", -1, "Convert only the first N examples of each split "
                       "(-1: all).")
  flags.DEFINE_integer("num_threads", _DEFAULT_THREADS, "Threads that resize and encode.")
  flags.mark_flags_as_required(["config", "output"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  splits = flags.FLAGS.splits or list(dict.fromkeys(
      [config.data.train_split, config.data.test_split]))
  metadata = convert(config, flags.FLAGS.output, splits,
                     shorter_side=flags.FLAGS.shorter_side or None,
                     image_format=flags.FLAGS.format, jpeg_quality=flags.FLAGS.jpeg_quality,
                     num_shards=flags.FLAGS.num_shards, max_examples=flags.FLAGS.max_examples,
                     num_threads=flags.FLAGS.num_threads)
  summary = {split: entry["num_examples"] for split, entry in metadata["splits"].items()}
  print(json.dumps({"output": flags.FLAGS.output, "examples": summary,
                    "image_format": metadata["image_format"],
                    "shorter_side": metadata["shorter_side"]}))


if __name__ == "__main__":
  _define_flags()
  sys.exit(app.run(main))
