"""ArrayRecord conversion: round trips (PNG bitwise, JPEG within a tolerance, multi-label),
metadata, resizing, errors, and the train/eval pipelines reading a converted dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import common
from configs import moco_v2
from input_pipeline import convert_array_record
from input_pipeline import pipeline
from input_pipeline import sources
from ssl_jax import config_validation


class ListSource:
  """Examples given as a list of (image, label): any image layout, any label shape."""

  def __init__(self, examples):
    self._examples = examples

  def __len__(self):
    return len(self._examples)

  def __getitem__(self, index):
    image, label = self._examples[index]
    return {"image": image, "label": label}


def random_images(rng, shapes):
  return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]


def digits_config(root: str = ""):
  config = common.base_config("test", "digits")
  config.data.root = root
  return config


def reading_config(root: str):
  config = digits_config(root)
  config.data.source = "array_record"
  return config


def test_png_round_trip_is_bitwise_with_the_right_metadata(tmp_path):
  rng = np.random.default_rng(0)
  # Mixed shapes and layouts: non-square both ways, grayscale (H, W), RGBA; all smaller than
  # the shorter side, so nothing is resized and PNG must give back the exact pixels.
  shapes = [(12, 17, 3), (17, 12, 3), (16, 16, 3), (9, 20), (14, 11, 4)] * 4
  train_images = random_images(rng, shapes)
  train_labels = rng.integers(0, 10, len(train_images))
  test_images = random_images(rng, [(15, 13, 3)] * 7)
  test_labels = rng.integers(0, 10, 7)
  split_sources = {
      "train": ListSource(list(zip(train_images, train_labels))),
      "test": ListSource(list(zip(test_images, test_labels))),
  }
  config = digits_config()
  metadata = convert_array_record.convert(config, str(tmp_path), ["train", "test"],
                                          shorter_side=64, image_format="png",
                                          split_sources=split_sources)

  on_disk = json.loads((tmp_path / "metadata.json").read_text())
  assert on_disk == json.loads(json.dumps(metadata))
  assert on_disk["splits"]["train"] == {"num_examples": 20, "files": ["train.array_record"]}
  assert on_disk["splits"]["test"] == {"num_examples": 7, "files": ["test.array_record"]}
  assert on_disk["label"] == {"dtype": "<i8", "shape": []}
  assert (on_disk["label_type"], on_disk["num_classes"], on_disk["image_size"]) == (
      "single", 10, config.data.image_size)
  assert (on_disk["image_format"], on_disk["shorter_side"]) == ("png", 64)
  assert on_disk["source"]["name"] == "digits"

  for split, images, labels in (("train", train_images, train_labels),
                                ("test", test_images, test_labels)):
    source = sources.make_source(reading_config(str(tmp_path)).data, split)
    assert len(source) == len(images)
    for index, (image, label) in enumerate(zip(images, labels)):
      element = source[index]
      expected = image if image.ndim == 3 and image.shape[-1] == 3 else None
      if image.ndim == 2:
        expected = np.repeat(image[..., None], 3, axis=-1)
      elif image.shape[-1] == 4:
        expected = image[..., :3]
      assert element["image"].dtype == np.uint8
      np.testing.assert_array_equal(element["image"], expected)
      assert element["label"] == int(label) and isinstance(element["label"], int)


def test_multi_label_sharded_round_trip_keeps_order_dtype_and_shape(tmp_path):
  rng = np.random.default_rng(1)
  images = random_images(rng, [(10, 10, 3)] * 11)
  labels = (rng.random((11, 14)) < 0.3).astype(np.float32)   # 14 multi-hot findings
  labels[3] = 0.5                                            # soft labels survive exactly too
  config = digits_config()
  config.data.num_classes = 14
  metadata = convert_array_record.convert(
      config, str(tmp_path), ["train"], shorter_side=32, image_format="png", num_shards=3,
      split_sources={"train": ListSource(list(zip(images, labels)))})
  assert metadata["label"] == {"dtype": "<f4", "shape": [14]}
  assert metadata["label_type"] == "multi_label"
  files = metadata["splits"]["train"]["files"]
  assert files == [f"train-0000{i}-of-00003.array_record" for i in range(3)]
  assert all(os.path.getsize(tmp_path / name) > 0 for name in files)

  reading = reading_config(str(tmp_path))
  reading.data.num_classes = 14
  source = sources.make_source(reading.data, "train")
  for index in range(11):
    element = source[index]
    np.testing.assert_array_equal(element["image"], images[index])
    assert element["label"].dtype == np.float32 and element["label"].shape == (14,)
    np.testing.assert_array_equal(element["label"], labels[index])


def test_jpeg_round_trip_resizes_the_shorter_side_within_a_tolerance(tmp_path):
  # Smooth images (JPEG's error on noise would be large, and no real photo is noise).
  rows, cols = np.meshgrid(np.linspace(0, 1, 90), np.linspace(0, 1, 120), indexing="ij")
  images = []
  for phase in range(4):
    image = np.stack([np.sin(3 * rows + phase), np.cos(2 * cols - phase), rows * cols], axis=-1)
    images.append(np.round((image * 0.5 + 0.5).clip(0, 1) * 255).astype(np.uint8))
  images.append(np.ascontiguousarray(images[0].transpose(1, 0, 2)))   # portrait 120 x 90
  metadata = convert_array_record.convert(
      digits_config(), str(tmp_path), ["train"], shorter_side=45, image_format="jpeg",
      jpeg_quality=95, split_sources={"train": ListSource([(im, 1) for im in images])})
  assert (metadata["image_format"], metadata["jpeg_quality"]) == ("jpeg", 95)

  source = sources.make_source(reading_config(str(tmp_path)).data, "train")
  for index, original in enumerate(images):
    decoded = source[index]["image"]
    # Shorter side 90 -> 45 exactly; the longer one follows the aspect ratio (120 -> 60).
    expected_shape = (45, 60, 3) if original.shape[0] < original.shape[1] else (60, 45, 3)
    assert decoded.shape == expected_shape
    # Independent reference: the original halved by 2x2 block means (a smooth image's bicubic
    # reduction differs from it by well under one grey level on average).
    block_mean = original.reshape(expected_shape[0], 2, expected_shape[1], 2, 3).mean(axis=(1, 3))
    error = np.abs(decoded.astype(np.float64) - block_mean)
    assert error.mean() < 1.5 and np.percentile(error, 99) < 6


def test_converted_dataset_feeds_the_train_and_eval_pipelines(tmp_path):
  config = digits_config()
  convert_array_record.convert(config, str(tmp_path), ["train", "test"], image_format="png")
  reading = reading_config(str(tmp_path))
  reference_test = sources.make_source(config.data, "test")

  iterator = iter(pipeline.build_train_dataset(reading, 32))
  batches = [next(iterator) for _ in range(3)]
  size = reading.data.image_size
  for batch in batches:
    assert set(batch) == {"view1", "view2", "label"}   # the label feeds the supervised objective
    assert batch["view1"].shape == (32, size, size, 3) and batch["view1"].dtype == np.uint8
  # The same stream as from the original source: digits are smaller than the shorter side,
  # PNG is lossless, so the converted dataset holds identical examples in identical order.
  original = iter(pipeline.build_train_dataset(config, 32))
  for batch in batches:
    original_batch = next(original)
    np.testing.assert_array_equal(batch["view1"], original_batch["view1"])
    np.testing.assert_array_equal(batch["label"], original_batch["label"])

  eval_batches = list(pipeline.eval_batches(reading, "test", batch_size=200))
  labels = np.concatenate([b["label"] for b in eval_batches])
  np.testing.assert_array_equal(labels, [reference_test[i]["label"] for i in range(len(labels))])
  assert len(labels) == len(reference_test)

  # The engine accepts it in a real objective's config (checks that run before device work).
  moco_config = moco_v2.get_config("digits")
  moco_config.data.update(dict(source="array_record", root=str(tmp_path)))
  config_validation.validate_config(moco_config, num_devices=8, process_count=1)

  # Worker processes reopen the ArrayRecord files from their paths and give the same stream.
  reading.data.num_workers = 1
  from_worker = iter(pipeline.build_train_dataset(reading, 32))
  try:
    np.testing.assert_array_equal(next(from_worker)["view2"], batches[0]["view2"])
  finally:
    from_worker.close()


def test_bad_directories_and_mismatched_configs_get_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="needs data.root"):
    sources.make_source(reading_config("").data, "train")
  with pytest.raises(FileNotFoundError, match="metadata.json does not exist"):
    sources.make_source(reading_config(str(tmp_path)).data, "train")

  images = random_images(np.random.default_rng(2), [(8, 8, 3)] * 4)
  convert_array_record.convert(digits_config(), str(tmp_path), ["train"], image_format="png",
                               split_sources={"train": ListSource([(im, 0) for im in images])})
  with pytest.raises(ValueError, match=r"split 'test' is not in .* it has \['train'\]"):
    sources.make_source(reading_config(str(tmp_path)).data, "test")
  wrong_classes = reading_config(str(tmp_path))
  wrong_classes.data.num_classes = 100
  with pytest.raises(ValueError, match="has 10 classes but data.num_classes is 100"):
    sources.make_source(wrong_classes.data, "train")
  with pytest.raises(ValueError, match="other settings"):
    convert_array_record.convert(digits_config(), str(tmp_path), ["test"], image_format="jpeg",
                                 split_sources={"test": ListSource([(images[0], 0)])})
  with pytest.raises(ValueError, match="label of"):
    convert_array_record.convert(
        digits_config(), str(tmp_path / "mixed"), ["train"], image_format="png",
        split_sources={"train": ListSource([(images[0], 0), (images[1], np.zeros(3))])})
  with pytest.raises(ValueError, match="allowed: \\['png', 'jpeg'\\]"):
    convert_array_record.convert(digits_config(), str(tmp_path / "x"), ["train"],
                                 image_format="webp",
                                 split_sources={"train": ListSource([(images[0], 0)])})


def test_resize_keeps_small_images_and_makes_the_shorter_side_exact():
  image = np.zeros((301, 451, 3), np.uint8)
  assert convert_array_record.resize_shorter_side(image, 256).shape == (256, 384, 3)
  assert convert_array_record.resize_shorter_side(image.transpose(1, 0, 2), 256).shape == (
      384, 256, 3)
  assert convert_array_record.resize_shorter_side(image, 400) is image   # never enlarged
  assert convert_array_record.default_shorter_side(224) == 258
  # Independent check of the filter: a constant image stays constant after resizing.
  grey = np.full((100, 70, 3), 77, np.uint8)
  np.testing.assert_array_equal(convert_array_record.resize_shorter_side(grey, 35), 77)
  assert Image.fromarray(grey).size == (70, 100)


def test_command_line_converts_the_configured_splits(tmp_path):
  output = tmp_path / "digits_ar"
  result = subprocess.run(
      [sys.executable, "-m", "input_pipeline.convert_array_record",
       "--config=configs/moco_v2.py:digits", f"--output={output}", "--splits=test",
       "--max_examples=50", "--format=png", "--num_threads=1"],
      capture_output=True, text=True, check=False, timeout=120,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["examples"] == {"test": 50} and summary["shorter_side"] == 19   # ceil(1.15*16)
  config = reading_config(str(output))
  converted = sources.make_source(config.data, "test")
  original = sources.make_source(digits_config().data, "test")
  assert len(converted) == 50
  for index in (0, 17, 49):
    np.testing.assert_array_equal(converted[index]["image"], original[index]["image"])
    assert converted[index]["label"] == original[index]["label"]
