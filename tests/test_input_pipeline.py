"""Tests for the host side of the input pipeline: sources, host crops, the grain train stream.

Stream tests use a source whose images encode their own index in their (constant) pixels, so a
batch tells exactly which examples it holds, whatever crop or flip was applied.
"""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from configs import common
from input_pipeline import host_augment
from input_pipeline import pipeline
from input_pipeline import sources


def make_config(dataset: str = "digits") -> ml_collections.ConfigDict:
  return common.base_config("test", dataset)


def index_source(num_examples: int, size: int = 8) -> sources.ArraySource:
  """Constant images whose first two channels hold index // 256 and index % 256."""
  indices = np.arange(num_examples)
  pixels = np.stack([indices // 256, indices % 256, np.full_like(indices, 7)], axis=-1)
  images = np.broadcast_to(pixels[:, None, None, :], (num_examples, size, size, 3))
  return sources.ArraySource(images.astype(np.uint8), indices % 10)


def decode_indices(views: np.ndarray) -> np.ndarray:
  pixels = views[:, 0, 0].astype(np.int64)
  return pixels[:, 0] * 256 + pixels[:, 1]


def index_stream_config(image_size: int = 8) -> ml_collections.ConfigDict:
  config = make_config("digits")
  config.data.image_size = image_size
  config.augment.crop_scale = (1.0, 1.0)
  config.augment.flip = False
  return config


def take(iterator, num_batches: int) -> list[dict[str, np.ndarray]]:
  return [next(iterator) for _ in range(num_batches)]


# ----------------------------------------------------------------------------------- sources


def test_digits_splits_sizes_disjoint_balanced_and_uint8():
  data_config = make_config("digits").data
  data_config.image_size = 32
  train = sources.make_source(data_config, "train")
  test = sources.make_source(data_config, "test")
  assert (len(train), len(test)) == (1347, 450)

  train_images = np.stack([train[i]["image"] for i in range(len(train))])
  test_images = np.stack([test[i]["image"] for i in range(len(test))])
  assert train_images.shape == (1347, 32, 32, 3) and train_images.dtype == np.uint8
  assert test_images.shape == (450, 32, 32, 3)
  assert train_images.min() == 0 and train_images.max() == 255
  # Grayscale digits replicated to RGB.
  np.testing.assert_array_equal(train_images[..., 0], train_images[..., 2])
  # The 1797 digits are all distinct, so disjoint splits share no image.
  assert not {x.tobytes() for x in train_images} & {x.tobytes() for x in test_images}

  train_counts = np.bincount([train[i]["label"] for i in range(len(train))], minlength=10)
  test_counts = np.bincount([test[i]["label"] for i in range(len(test))], minlength=10)
  assert train_counts.min() >= 125 and train_counts.max() <= 145, train_counts
  assert test_counts.min() >= 40 and test_counts.max() <= 50, test_counts
  # The split does not depend on any config seed.
  other = make_config("digits").data
  other.image_size = 32
  other.shuffle_seed = 123
  np.testing.assert_array_equal(sources.make_source(other, "test")[17]["image"], test_images[17])


def test_digits_validation_splits_partition_the_training_split():
  data_config = make_config("digits").data
  data_config.image_size = 8

  def images_and_labels(split):
    source = sources.make_source(data_config, split)
    return ([source[i]["image"].tobytes() for i in range(len(source))],
            np.array([source[i]["label"] for i in range(len(source))]))

  train, train_labels = images_and_labels("train")
  fit, fit_labels = images_and_labels("train_minus_val")
  val, val_labels = images_and_labels("val")
  assert (len(fit), len(val)) == (1000, 347)
  # Every training image is in exactly one of the two; none of the test images is in either.
  assert sorted(fit + val) == sorted(train)
  assert not set(fit) & set(val)
  assert not set(val) & set(images_and_labels("test")[0])
  # Stratified: each class keeps its share of the training split (within one image).
  expected_val = np.bincount(train_labels, minlength=10) * 347 / 1347
  assert np.all(np.abs(np.bincount(val_labels, minlength=10) - expected_val) <= 1), val_labels
  assert np.array_equal(np.bincount(fit_labels, minlength=10) + np.bincount(val_labels, minlength=10),
                        np.bincount(train_labels, minlength=10))


def test_unknown_source_and_split_errors_list_allowed_values():
  data_config = make_config("digits").data
  with pytest.raises(ValueError,
                     match=r"'validation'.*\['train', 'test', 'train_minus_val', 'val'\]"):
    sources.make_source(data_config, "validation")
  data_config.source = "hdf5"
  with pytest.raises(ValueError, match=r"'hdf5'.*'digits'.*'synthetic'"):
    sources.make_source(data_config, "train")
  data_config.source = "arrays"
  with pytest.raises(ValueError, match="arrays="):
    sources.make_source(data_config, "train")


def test_array_source_converts_grayscale_rgba_and_16_bit():
  gray = sources.ArraySource(np.full((2, 4, 5), 9, np.uint8), [3, 4])
  element = gray[1]
  assert element["image"].shape == (4, 5, 3) and element["image"].dtype == np.uint8
  assert element["label"] == 4 and (element["image"] == 9).all()
  # 16-bit full scale must map to 255, not saturate everything above 255.
  deep = sources.ArraySource(np.array([[[[0], [65535], [32896]]]], np.uint16), [0])
  np.testing.assert_array_equal(deep[0]["image"][0, :, 0], [0, 255, 128])
  rgba = sources.ArraySource(np.arange(2 * 4, dtype=np.uint8).reshape(1, 2, 1, 4), [0])
  np.testing.assert_array_equal(rgba[0]["image"][:, 0], [[0, 1, 2], [4, 5, 6]])
  arrays = sources.make_source(ml_collections.ConfigDict(dict(source="arrays")), "train",
                               arrays=(np.zeros((3, 2, 2), np.uint8), np.arange(3)))
  assert len(arrays) == 3


def test_synthetic_source_is_deterministic_and_classes_are_separable():
  data_config = make_config("synthetic").data
  data_config.num_train_examples = 400
  train = sources.make_source(data_config, "train")
  test = sources.make_source(data_config, "test")
  assert (len(train), len(test)) == (400, 100)
  np.testing.assert_array_equal(train[5]["image"], sources.make_source(data_config, "train")[5]
                                ["image"])
  assert train[5]["image"].shape == (32, 32, 3) and train[5]["image"].dtype == np.uint8
  assert not np.array_equal(train[5]["image"], test[5]["image"])

  def features(source):
    # Mean colour plus the power spectrum: invariant to the random stripe phase.
    images = np.stack([source[i]["image"] for i in range(len(source))]).astype(np.float32)
    gray = images.mean(-1)
    spectrum = np.abs(np.fft.fft2(gray - gray.mean((1, 2), keepdims=True)))[:, :5, :5]
    return (np.concatenate([images.mean((1, 2)), spectrum.reshape(len(images), -1) / 100], 1),
            np.array([source[i]["label"] for i in range(len(source))]))

  train_x, train_y = features(train)
  test_x, test_y = features(test)
  centroids = np.stack([train_x[train_y == c].mean(0) for c in range(10)])
  predicted = np.argmin(((test_x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  assert (predicted == test_y).mean() > 0.9


def test_tfds_source_and_train_stream_with_mocked_cifar10():
  tfds = pytest.importorskip("tensorflow_datasets")
  config = make_config("cifar10")
  with tfds.testing.mock_data(num_examples=48):
    source = sources.make_source(config.data, "train")
    assert len(source) == 48
    element = source[3]
    assert element["image"].shape == (32, 32, 3) and element["image"].dtype == np.uint8
    assert isinstance(element["label"], int)
    assert pipeline.train_dataset_size(config) == 48
    iterator = iter(pipeline.build_train_dataset(config, global_batch_size=16))
    batch = next(iterator)
    eval_batch = next(pipeline.eval_batches(config, "test", batch_size=10))
  assert set(batch) == {"view1", "view2", "label"}
  for view in (batch["view1"], batch["view2"]):
    assert view.shape == (16, 32, 32, 3) and view.dtype == np.uint8
  assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
  assert eval_batch["image"].shape == (10, 32, 32, 3) and eval_batch["label"].dtype == np.int32


# ------------------------------------------------------------------------------ host crops


def test_crop_scale_one_without_flip_is_the_identity():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  for _ in range(20):
    view = host_augment.random_crop_flip(image, 32, (1.0, 1.0), False, rng)
    np.testing.assert_array_equal(view, image)
  # A non-square image falls back to the largest centred box within the 3/4..4/3 ratio range.
  box = host_augment.sample_crop_box(20, 40, (1.0, 1.0), host_augment.CROP_ASPECT_RATIO, rng)
  assert box == (0, 6, 20, 27)   # width round(20 * 4/3), left (40 - 27) // 2


def test_crop_boxes_follow_the_scale_and_ratio_ranges():
  rng = np.random.default_rng(1)
  boxes = np.array([host_augment.sample_crop_box(64, 48, (0.2, 0.6), (0.75, 4 / 3), rng)
                    for _ in range(500)])
  top, left, height, width = boxes.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + height <= 64).all() and (left + width <= 48).all()
  area_fraction = height * width / (64 * 48)
  # Rounding box sides to integers moves the area by a little more than a pixel row.
  assert area_fraction.min() > 0.18 and area_fraction.max() < 0.63
  aspect = width / height
  assert aspect.min() > 0.7 and aspect.max() < 1.43
  assert len({tuple(b) for b in boxes}) > 400   # parameters really are drawn per call


def test_two_views_and_images_in_a_batch_get_different_crops():
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  transform = host_augment.TwoViewCrop(image_size=24, crop_scale=(0.2, 1.0), flip=True)
  views = transform.random_map({"image": image, "label": 0}, np.random.default_rng(3))
  assert views["view1"].shape == (24, 24, 3) and views["view1"].dtype == np.uint8
  assert not np.array_equal(views["view1"], views["view2"])

  config = make_config("digits")
  config.data.image_size = 24
  same_image = sources.ArraySource(np.broadcast_to(image, (64, 32, 32, 3)), np.zeros(64))
  batch = next(iter(pipeline.build_train_dataset(config, 16, source=same_image)))
  for name in ("view1", "view2"):
    assert batch[name].shape == (16, 24, 24, 3)
    distinct = {view.tobytes() for view in batch[name]}
    assert len(distinct) == 16


def test_eval_resize_keeps_images_at_size_and_centre_crops_others():
  rng = np.random.default_rng(4)
  image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  assert host_augment.eval_resize(image, 16) is image
  wide = np.zeros((20, 40, 3), np.uint8)
  wide[:, 8:32] = 200   # covers the centred square (columns 10..30) and the filter's reach
  resized = host_augment.eval_resize(wide, 10)
  assert resized.shape == (10, 10, 3)
  assert (resized == 200).all()   # the dark sides were cropped away, not squeezed in


# ---------------------------------------------------------------------------- train stream


def test_train_stream_is_deterministic_for_a_seed():
  config = make_config("digits")
  first = take(iter(pipeline.build_train_dataset(config, 32, seed=5)), 3)
  second = take(iter(pipeline.build_train_dataset(config, 32, seed=5)), 3)
  other_seed = take(iter(pipeline.build_train_dataset(config, 32, seed=6)), 1)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a["view1"], b["view1"])
    np.testing.assert_array_equal(a["view2"], b["view2"])
  assert not np.array_equal(first[0]["view1"], other_seed[0]["view1"])


def test_each_epoch_is_a_fresh_permutation_of_all_examples():
  num_examples, batch_size = 96, 16
  batches_per_epoch = num_examples // batch_size
  iterator = iter(pipeline.build_train_dataset(index_stream_config(), batch_size, seed=0,
                                               source=index_source(num_examples)))
  epochs = []
  for _ in range(2):
    batches = take(iterator, batches_per_epoch)
    view1 = np.concatenate([decode_indices(b["view1"]) for b in batches])
    view2 = np.concatenate([decode_indices(b["view2"]) for b in batches])
    np.testing.assert_array_equal(view1, view2)   # both views come from the same example
    # Each example's label travels with its views (index_source labels example i with i % 10).
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), view1 % 10)
    np.testing.assert_array_equal(np.sort(view1), np.arange(num_examples))
    epochs.append(view1)
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[0], np.arange(num_examples))   # shuffled at all


def test_process_blocks_are_disjoint_and_make_up_the_single_process_batch():
  num_examples, global_batch_size, process_count = 96, 16, 2
  steps = 2 * num_examples // global_batch_size   # two epochs
  source = index_source(num_examples)
  single = take(iter(pipeline.build_train_dataset(
      index_stream_config(), global_batch_size, seed=0, source=source)), steps)
  per_process = []
  for process_index in range(process_count):
    iterator = iter(pipeline.build_train_dataset(
        index_stream_config(), global_batch_size, process_index, process_count, seed=0,
        source=source))
    batches = take(iterator, steps)
    assert batches[0]["view1"].shape[0] == global_batch_size // process_count
    per_process.append(batches)
  for step in range(steps):
    # The global batch of a 2-process job is exactly the single-process one, crops included.
    for view in ("view1", "view2"):
      np.testing.assert_array_equal(
          np.concatenate([per_process[p][step][view] for p in range(process_count)]),
          single[step][view])
  for epoch in range(2):
    epoch_steps = range(epoch * steps // 2, (epoch + 1) * steps // 2)
    seen = [np.concatenate([decode_indices(per_process[p][step]["view1"])
                            for step in epoch_steps]) for p in range(process_count)]
    assert not set(seen[0]) & set(seen[1])   # no example in both processes' batches
    # ... and none missing or repeated within the epoch.
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(num_examples))
  with pytest.raises(ValueError, match="multiple of the process count"):
    pipeline.build_train_dataset(index_stream_config(), 15, 0, 2, source=source)


def test_resumed_iterator_continues_bitwise_identically_across_an_epoch():
  # digits with the full random crop + flip, 5 batches per epoch: batches 3..8 cross epoch 1.
  config = make_config("digits")
  uninterrupted = take(iter(pipeline.build_train_dataset(config, 256)), 9)

  iterator = iter(pipeline.build_train_dataset(config, 256))
  take(iterator, 3)
  saved = json.loads(json.dumps(iterator.get_state()))   # orbax's JsonSave round trip
  restored = iter(pipeline.build_train_dataset(config, 256))
  restored.set_state(saved)
  for expected, actual in zip(uninterrupted[3:], take(restored, 6)):
    np.testing.assert_array_equal(expected["view1"], actual["view1"])
    np.testing.assert_array_equal(expected["view2"], actual["view2"])


def test_worker_processes_give_the_same_stream_and_a_json_state():
  config = index_stream_config()
  source = index_source(64)
  in_process = take(iter(pipeline.build_train_dataset(config, 8, source=source)), 4)
  config.data.num_workers = 1
  iterator = iter(pipeline.build_train_dataset(config, 8, source=source))
  try:
    from_workers = take(iterator, 4)
    state = iterator.get_state()
    assert json.loads(json.dumps(state)) == state
  finally:
    iterator.close()
  for expected, actual in zip(in_process, from_workers):
    np.testing.assert_array_equal(expected["view1"], actual["view1"])


# ---------------------------------------------------------------------------- eval batches


def test_eval_batches_cover_the_split_once_in_order():
  config = make_config("digits")
  source = sources.make_source(config.data, "test")
  batches = list(pipeline.eval_batches(config, "test", batch_size=128))
  assert [len(b["label"]) for b in batches] == [128, 128, 128, 66]
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  np.testing.assert_array_equal(labels, [source[i]["label"] for i in range(len(source))])
  np.testing.assert_array_equal(images[100], source[100]["image"])
  capped = list(pipeline.eval_batches(config, "test", batch_size=64, max_examples=100))
  assert [len(b["label"]) for b in capped] == [64, 36]
