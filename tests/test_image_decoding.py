"""Decoding image files (bit depths, alpha, palettes, EXIF), skipping unreadable ones, rotation.

Expected values come from independent NumPy computations on the arrays the files were written
from, not from the decoder.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from PIL import Image
import pytest

from input_pipeline import file_list_source
from input_pipeline import host_augment
from input_pipeline import image_files
from input_pipeline import pipeline
from configs import common
import dataset_files


def _save(tmp_path, name: str, image: Image.Image, **kwargs) -> str:
  path = str(tmp_path / name)
  image.save(path, **kwargs)
  return path


# ------------------------------------------------------------------------------------ decoding


def test_16_bit_png_keeps_its_contrast(tmp_path):
  rng = np.random.default_rng(0)
  # An X-ray-like 16-bit image using 1000..5000 of 0..65535.
  raw = rng.integers(1000, 5001, (48, 40)).astype(np.uint16)
  path = _save(tmp_path, "xray16.png", Image.fromarray(raw))
  assert Image.open(path).mode.startswith("I")   # really stored as 16-bit
  decoded = image_files.decode_image_file(path)
  assert decoded.shape == (48, 40, 3) and decoded.dtype == np.uint8
  gray = decoded[..., 0]
  assert (decoded == gray[..., None]).all()
  assert np.mean(gray == 255) < 0.01 and np.mean(gray == 0) < 0.01   # not saturated
  assert gray.max() - gray.min() == 255                              # the full 8-bit range
  expected = np.round((raw.astype(np.float64) - raw.min()) / (raw.max() - raw.min()) * 255)
  np.testing.assert_array_equal(gray, expected.astype(np.uint8))
  # What dividing by 257 would have given: everything within 4..19 of 255 levels.
  assert (raw / 257).max() < 20


def test_8_bit_grayscale_and_rgb_round_trip_exactly(tmp_path):
  rng = np.random.default_rng(1)
  gray = rng.integers(0, 256, (9, 7), dtype=np.uint8)
  rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
  decoded_gray = image_files.decode_image_file(_save(tmp_path, "g.png", Image.fromarray(gray)))
  np.testing.assert_array_equal(decoded_gray, np.repeat(gray[..., None], 3, axis=-1))
  decoded_rgb = image_files.decode_image_file(_save(tmp_path, "c.png", Image.fromarray(rgb)))
  np.testing.assert_array_equal(decoded_rgb, rgb)


def test_rgba_and_la_are_composited_over_black(tmp_path):
  colour = np.array([[[200, 100, 50], [200, 100, 50], [10, 250, 3]]], np.uint8)
  alpha = np.array([[128, 0, 255]], np.uint8)
  rgba = np.concatenate([colour, alpha[..., None]], axis=-1)
  decoded = image_files.decode_image_file(_save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")))
  expected = np.round(colour.astype(np.float64) * alpha[..., None] / 255.0).astype(np.uint8)
  np.testing.assert_array_equal(decoded, expected)
  np.testing.assert_array_equal(decoded[0, 0], [100, 50, 25])   # half-transparent: half colour
  np.testing.assert_array_equal(decoded[0, 1], [0, 0, 0])       # transparent: the background
  la = np.stack([np.array([[90, 90]], np.uint8), np.array([[255, 85]], np.uint8)], axis=-1)
  decoded_la = image_files.decode_image_file(_save(tmp_path, "la.png", Image.fromarray(la, "LA")))
  np.testing.assert_array_equal(decoded_la[0], [[90] * 3, [30] * 3])


def test_palette_image_decodes_to_its_palette_colours(tmp_path):
  palette = np.array([[255, 0, 0], [0, 128, 0], [10, 20, 230], [255, 255, 255]], np.uint8)
  indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
  image = Image.fromarray(indices, "P")
  image.putpalette(palette.ravel().tolist())
  decoded = image_files.decode_image_file(_save(tmp_path, "p.png", image))
  np.testing.assert_array_equal(decoded, palette[indices])
  # A palette entry marked transparent composites to the background (black).
  transparent = _save(tmp_path, "pt.png", image, transparency=1)
  np.testing.assert_array_equal(image_files.decode_image_file(transparent),
                                np.where((indices == 1)[..., None], 0, palette[indices]))


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
  # As stored: 16 rows x 32 columns, bright left half. EXIF orientation 6 says "rotate 90 degrees
  # clockwise to display", so upright it is 32 x 16 with the bright half on top.
  stored = np.zeros((16, 32, 3), np.uint8)
  stored[:, :16] = 230
  exif = Image.Exif()
  exif[0x0112] = 6
  path = _save(tmp_path, "phone.jpg", Image.fromarray(stored), exif=exif, quality=95)
  decoded = image_files.decode_image_file(path)
  expected = np.rot90(stored, k=-1)   # clockwise
  assert decoded.shape == expected.shape == (32, 16, 3)
  assert np.abs(decoded.astype(int) - expected).mean() < 5
  assert decoded[:16].mean() > 200 and decoded[16:].mean() < 30


def _truncated_jpeg(path: str, rng) -> str:
  dataset_files.write_image(path, dataset_files.random_image(rng, 32), quality=90)
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  return path


def test_truncated_and_garbage_files_raise_naming_the_file(tmp_path):
  rng = np.random.default_rng(2)
  truncated = _truncated_jpeg(str(tmp_path / "cut.jpg"), rng)
  with pytest.raises(image_files.UnreadableImageError, match="cut.jpg"):
    image_files.decode_image_file(truncated)
  garbage = tmp_path / "noise.png"
  garbage.write_bytes(b"not an image at all")
  with pytest.raises(image_files.UnreadableImageError, match="noise.png"):
    image_files.decode_image_file(str(garbage))


# ------------------------------------------------------------------------ skipping bad files


def _list_source(tmp_path, num_files: int, bad: dict[int, str], max_skipped_fraction: float
                 ) -> file_list_source.ImageListSource:
  """Files 0..n-1 whose pixels all equal their index; `bad` = {index: 'truncated'|'garbage'}."""
  rng = np.random.default_rng(3)
  names = []
  for index in range(num_files):
    name = f"{index:03d}.jpg" if bad.get(index) == "truncated" else f"{index:03d}.png"
    path = str(tmp_path / name)
    if bad.get(index) == "truncated":
      _truncated_jpeg(path, rng)
    elif bad.get(index) == "garbage":
      (tmp_path / name).write_bytes(b"\x89PNG broken")
    else:
      dataset_files.write_image(path, np.full((8, 8, 3), index, np.uint8))
    names.append(name)
  return file_list_source.ImageListSource(str(tmp_path), names, np.arange(num_files) * 10,
                                          max_skipped_fraction=max_skipped_fraction)


def test_unreadable_file_is_skipped_logged_and_replaced_deterministically(tmp_path, caplog):
  source = _list_source(tmp_path, 10, {3: "truncated"}, max_skipped_fraction=0.2)
  with caplog.at_level(logging.WARNING):
    element = source[3]
  # Replaced by the next readable file, image and label together.
  assert (element["image"] == 4).all() and element["label"] == 40
  assert "003.jpg" in caplog.text and "skipping unreadable image" in caplog.text
  assert source.skipped_files == [str(tmp_path / "003.jpg")]
  again = source[3]
  assert (again["image"] == 4).all() and again["label"] == 40
  assert caplog.text.count("003.jpg") == 1   # reported once
  for index in (0, 4, 9):
    assert (source[index]["image"] == index).all() and source[index]["label"] == 10 * index
  # 1 of 10 read files is below the threshold of 20 %: reading everything is fine.
  assert [int(source[i]["label"]) for i in range(10)] == [0, 10, 20, 40, 40, 50, 60, 70, 80, 90]


def test_skipped_fraction_above_the_threshold_stops_with_the_file_names(tmp_path):
  source = _list_source(tmp_path, 10, {2: "truncated", 5: "garbage", 7: "truncated"},
                        max_skipped_fraction=0.01)
  config = common.base_config("test", "digits")
  config.data.image_size = 8
  with pytest.raises(file_list_source.TooManyUnreadableImages) as error:
    list(pipeline.eval_batches(config, "test", 4, source=source))
  message = str(error.value)
  assert "3 of the 10" in message and "max_skipped_fraction=1.0%" in message
  for name in ("002.jpg", "005.png", "007.jpg"):
    assert name in message


def test_one_bad_file_in_ten_passes_a_15_percent_threshold_but_not_5_percent(tmp_path):
  lenient = _list_source(tmp_path, 10, {6: "garbage"}, max_skipped_fraction=0.15)
  assert len([lenient[i] for i in range(10)]) == 10
  strict = file_list_source.ImageListSource(lenient.root, lenient.relative_paths, lenient.labels,
                                            max_skipped_fraction=0.05)
  with pytest.raises(file_list_source.TooManyUnreadableImages, match="006.png"):
    [strict[i] for i in range(10)]


def test_source_pickles_for_worker_processes_with_a_fresh_count(tmp_path):
  import pickle
  source = _list_source(tmp_path, 4, {1: "garbage"}, max_skipped_fraction=0.5)
  source[1]
  copy = pickle.loads(pickle.dumps(source))
  assert copy.skipped_files == [] and source.skipped_files == [str(tmp_path / "001.png")]
  assert (copy[1]["image"] == 2).all()


# ------------------------------------------------------------------------------------ rotation


def _reference_rotation(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
  """Counter-clockwise (as displayed, rows pointing down) rotation about the image centre with
  bilinear sampling, by inverse mapping of every output pixel centre; also returns the mask of
  output pixels whose four source pixels are all inside the image."""
  height, width = image.shape[:2]
  theta = math.radians(degrees)
  rows, cols = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
  dx, dy = cols - width / 2, rows - height / 2
  # Inverse of a counter-clockwise turn (y down): where each output pixel came from.
  source_x = dx * math.cos(theta) - dy * math.sin(theta) + width / 2 - 0.5
  source_y = dx * math.sin(theta) + dy * math.cos(theta) + height / 2 - 0.5
  x0, y0 = np.floor(source_x).astype(int), np.floor(source_y).astype(int)
  inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < width) & (y0 + 1 < height)
  x0c, y0c = np.clip(x0, 0, width - 2), np.clip(y0, 0, height - 2)
  fx, fy = (source_x - x0)[..., None], (source_y - y0)[..., None]
  pixels = image.astype(np.float64)
  top = pixels[y0c, x0c] * (1 - fx) + pixels[y0c, x0c + 1] * fx
  bottom = pixels[y0c + 1, x0c] * (1 - fx) + pixels[y0c + 1, x0c + 1] * fx
  return top * (1 - fy) + bottom * fy, inside


@pytest.mark.parametrize("degrees", [17.0, -23.5])
def test_rotation_matches_a_numpy_bilinear_reference(degrees):
  rng = np.random.default_rng(4)
  # Smooth content, so that interpolation differences stay small and a wrong angle or direction
  # does not.
  rows, cols = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
  image = np.stack([rows * 10, cols * 10, (rows + cols) * 5], axis=-1).astype(np.uint8)
  image = np.clip(image.astype(int) + rng.integers(0, 3, image.shape), 0, 255).astype(np.uint8)
  rotated = host_augment.rotate(image, degrees)
  expected, inside = _reference_rotation(image, degrees)
  assert rotated.shape == image.shape and rotated.dtype == np.uint8
  difference = np.abs(rotated.astype(np.float64) - expected)[inside]
  assert difference.max() <= 1.0, difference.max()
  wrong_direction, _ = _reference_rotation(image, -degrees)
  assert np.abs(rotated.astype(np.float64) - wrong_direction)[inside].mean() > 20
  # Corners the rotation uncovers are black.
  assert (rotated[0, 0] == 0).all() and (rotated[-1, -1] == 0).all()


def test_rotation_by_90_degrees_is_counter_clockwise():
  image = np.arange(6 * 6 * 3, dtype=np.uint8).reshape(6, 6, 3)
  np.testing.assert_array_equal(host_augment.rotate(image, 90.0), np.rot90(image, k=1))


def test_default_geometric_options_draw_exactly_the_old_crop_and_flip():
  image = np.random.default_rng(5).integers(0, 256, (40, 30, 3), dtype=np.uint8)
  transform = host_augment.TwoViewCrop(16, (0.2, 1.0), True)
  views = transform.random_map({"image": image, "label": 0}, np.random.default_rng(7))
  rng = np.random.default_rng(7)
  for key in ("view1", "view2"):
    box = host_augment.sample_crop_box(40, 30, (0.2, 1.0), host_augment.CROP_ASPECT_RATIO, rng)
    expected = host_augment.crop_and_resize(image, box, 16)
    if rng.random() < 0.5:
      expected = expected[:, ::-1]
    np.testing.assert_array_equal(views[key], expected)


def test_no_crop_vertical_flip_and_rotation_per_view():
  image = np.random.default_rng(6).integers(0, 256, (20, 20, 3), dtype=np.uint8)
  plain = host_augment.random_crop_flip(image, 20, (0.2, 1.0), False, np.random.default_rng(0),
                                        random_resized_crop=False)
  np.testing.assert_array_equal(plain, image)   # no crop: the eval resize (identity here)
  flipped = [host_augment.random_crop_flip(image, 20, (0.2, 1.0), False,
                                           np.random.default_rng(seed), random_resized_crop=False,
                                           vertical_flip=True) for seed in range(8)]
  assert any((f == image[::-1]).all() for f in flipped) and any((f == image).all() for f in flipped)
  transform = host_augment.TwoViewCrop(20, (0.2, 1.0), False, random_resized_crop=False,
                                       rotation_degrees=30.0)
  views = transform.random_map({"image": image, "label": 0}, np.random.default_rng(1))
  assert not (views["view1"] == views["view2"]).all()   # each view draws its own angle
  rng = np.random.default_rng(1)
  angle = rng.uniform(-30.0, 30.0)
  assert abs(angle) <= 30.0
  np.testing.assert_array_equal(views["view1"], host_augment.rotate(image, angle))
