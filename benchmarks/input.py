r"""Input benchmark: does the input pipeline keep up with the train step on this machine?

  python benchmarks/input.py                                  # 32 px and 224 px, workers 0,1,2
  python benchmarks/input.py --sizes=224 --workers=0,4,8 --num_images=1024 --step_batch=64

For each train image size (32 px read from 40 px JPEGs, 224 px from 256 px ones, the sizes a
converted CIFAR / ImageNet has), it writes --num_images synthetic JPEG files to a temp dir,
converts them to ArrayRecord (`input_pipeline/convert_array_record.py`), and prints one JSON line
per measurement:

  convert          images/s of the converter (read JPEG file, re-encode, write)
  host_op          one thread, no grain: ms per image of JPEG decode, and of the two random
                   resized crops + flips (host_augment.TwoViewCrop)
  host_pipeline    the grain train pipeline up to the uint8 batch (decode + crop + flip + batch),
                   images/s with --workers worker processes (0 = in this process, with grain's
                   read threads), and per worker
  device_augment   augment_views (colour jitter, grayscale, blur, solarize, normalise of both
                   views), jitted, on the default backend
  train_step       benchmarks/step.py's step (synthetic: a device-resident batch; pipeline: fed
                   by the ArrayRecord pipeline), ResNet-18 (CIFAR stem at 32 px, ImageNet stem at
                   224 px), MoCo v2, float32 unless --dtype
  summary          host images/s (best worker count) / train step images/s: above 1, the host
                   keeps up with the step

An "image" is one example; each yields two views (two crops on the host, two augmented views on
the device). Every line carries the 1-minute load average: on a shared machine compare figures
within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks import step as step_benchmark  # noqa: E402
from benchmarks import workloads  # noqa: E402
from input_pipeline import array_record_source  # noqa: E402
from input_pipeline import convert_array_record  # noqa: E402
from input_pipeline import device_augment  # noqa: E402
from input_pipeline import host_augment  # noqa: E402
from input_pipeline import pipeline  # noqa: E402
from ssl_jax import cpu  # noqa: E402

# Train image size -> (stored shorter side, stored longer side) of the JPEGs: CIFAR-like 32 px
# trains from a converted 40 px set (1.15 x 32 rounded up, plus margin), ImageNet-like 224 px from
# 256 px with a 4:5 aspect ratio, as typical photos.
STORED_SIZES = {32: (40, 40), 224: (256, 320)}
OBJECTIVE = "moco_v2"


def _load() -> float:
  return round(os.getloadavg()[0], 2)


def synthetic_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A photo-like uint8 image: smooth colour fields, a few hard-edged shapes, mild noise (JPEG
  size and decode time depend on content; uniform noise would be unrepresentatively slow)."""
  rows, cols = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
  image = np.zeros((height, width, 3))
  for _ in range(4):
    frequency = rng.uniform(0.5, 4, size=2)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (frequency[0] * rows + frequency[1] * cols) + phase)
    image += wave[..., None] * rng.uniform(-0.25, 0.25, 3)
  for _ in range(3):
    centre, radius = rng.uniform(0, 1, 2), rng.uniform(0.05, 0.3)
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius ** 2
    image[disc] = rng.uniform(-0.5, 0.5, 3)
  image += rng.normal(0, 0.03, image.shape)
  return np.round(np.clip(image + 0.5, 0, 1) * 255).astype(np.uint8)


class JpegFileSource:
  """The JPEG files of a directory (label 0), decoded with PIL: what a downloaded set looks like."""

  def __init__(self, paths: list[str]):
    self._paths = paths

  def __len__(self) -> int:
    return len(self._paths)

  def __getitem__(self, index: int) -> dict:
    with Image.open(self._paths[index]) as image:
      return {"image": np.asarray(image.convert("RGB")), "label": 0}


def make_dataset(directory: str, image_size: int, num_images: int, config) -> dict:
  """Writes the JPEG files and converts them; returns the convert record."""
  height, width = STORED_SIZES[image_size]
  rng = np.random.default_rng(image_size)
  jpeg_dir = os.path.join(directory, "jpeg")
  os.makedirs(jpeg_dir, exist_ok=True)
  paths = []
  for index in range(num_images):
    path = os.path.join(jpeg_dir, f"{index:05d}.jpg")
    Image.fromarray(synthetic_photo(rng, height, width)).save(path, quality=90)
    paths.append(path)
  # The original's source is replaced by the files (split_sources); the config gives the rest.
  original = config.copy_and_resolve_references()
  original.data.source = "synthetic"
  start = time.perf_counter()
  convert_array_record.convert(
      original, os.path.join(directory, "array_record"), [config.data.train_split],
      shorter_side=height, image_format="jpeg", jpeg_quality=90,
      split_sources={config.data.train_split: JpegFileSource(paths)})
  seconds = time.perf_counter() - start
  record_file = os.path.join(directory, "array_record", f"{config.data.train_split}.array_record")
  return {"kind": "convert", "image_size": image_size, "stored": [height, width],
          "images": num_images, "img_per_s": round(num_images / seconds, 1),
          "bytes_per_image": round(os.path.getsize(record_file) / num_images),
          "load_average_1min": _load()}


def step_config(image_size: int, batch_size: int, dtype: str, root: str):
  """ResNet-18 MoCo v2 of the size's preset, reading the converted set."""
  if image_size == 32:
    config = workloads.cifar_work(OBJECTIVE, batch_size, dtype)
  else:
    config = workloads.imagenet_work(OBJECTIVE, batch_size, dtype)
    config.model.update(dict(name="resnet18", stem="imagenet"))
  config.data.update(dict(image_size=image_size, source="array_record", root=root,
                          num_workers=0))
  return config


def time_host_ops(config, num_images: int) -> dict:
  """Single-thread ms per image of decode and of the two-view crop, without grain."""
  source = array_record_source.ArrayRecordSource(config.data.root, config.data.train_split)
  crop = host_augment.TwoViewCrop.from_config(config)
  rng = np.random.default_rng(0)
  for index in range(num_images):   # file pages into the OS cache, as in a long run
    source[index]
  decode_seconds = crop_seconds = 0.0
  for index in range(num_images):
    start = time.perf_counter()
    element = source[index]
    middle = time.perf_counter()
    crop.random_map(element, rng)
    decode_seconds += middle - start
    crop_seconds += time.perf_counter() - middle
  per_image = (decode_seconds + crop_seconds) / num_images
  return {"kind": "host_op", "image_size": config.data.image_size, "images": num_images,
          "decode_ms": round(1e3 * decode_seconds / num_images, 3),
          "two_view_crop_flip_ms": round(1e3 * crop_seconds / num_images, 3),
          "img_per_s_one_thread": round(1 / per_image, 1), "load_average_1min": _load()}


def time_host_pipeline(config, batch_size: int, num_workers: int, seconds: float) -> dict:
  """Images/s of the grain train stream (uint8 two-view batches), after worker start-up."""
  config = config.copy_and_resolve_references()
  config.data.num_workers = num_workers
  iterator = iter(pipeline.build_train_dataset(config, batch_size))
  try:
    for _ in range(max(2, num_workers + 1)):   # start-up: workers spawned, buffers filled
      next(iterator)
    num_batches = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
      next(iterator)
      num_batches += 1
    elapsed = time.perf_counter() - start
  finally:
    iterator.close()
  images_per_second = num_batches * batch_size / elapsed
  return {"kind": "host_pipeline", "image_size": config.data.image_size, "batch": batch_size,
          "workers": num_workers, "batches": num_batches,
          "img_per_s": round(images_per_second, 1),
          "img_per_s_per_worker": round(images_per_second / max(1, num_workers), 1),
          "load_average_1min": _load()}


def time_device_augment(config, batch_size: int, repeats: int) -> dict:
  """augment_views alone, jitted, on a device-resident uint8 batch."""
  size = config.data.image_size
  rng = np.random.default_rng(0)
  views = {name: jax.device_put(rng.integers(0, 256, (batch_size, size, size, 3), np.uint8))
           for name in device_augment.VIEW_NAMES}
  augment = jax.jit(lambda key, views: device_augment.augment_views(
      key, views, config.augment, config.data.mean, config.data.std))
  start = time.perf_counter()
  jax.block_until_ready(augment(jax.random.key(0), views))
  compile_seconds = time.perf_counter() - start
  durations = []
  for repeat in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(augment(jax.random.key(repeat + 1), views))
    durations.append(time.perf_counter() - start)
  median = statistics.median(durations)
  return {"kind": "device_augment", "image_size": size, "batch": batch_size,
          "backend": jax.default_backend(), "compile_s": round(compile_seconds, 2),
          "median_s": round(median, 5), "img_per_s": round(batch_size / median, 1),
          "load_average_1min": _load()}


def time_train_step(config, data: str, steps: int) -> list[dict]:
  records = step_benchmark.benchmark(config, data=data, warmup=1, steps=steps, peak_tflops=None)
  keep = ("objective", "model", "stem", "image_size", "batch", "dtype", "conv_impl", "backend",
          "compile_s", "data", "steps", "median_step_s", "img_per_s", "pipeline_over_synthetic",
          "load_average_1min")
  return [dict(kind="train_step", **{key: record[key] for key in keep if key in record})
          for record in records]


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="32,224", help="train image sizes (32 and/or 224)")
  parser.add_argument("--num_images", type=int, default=512)
  parser.add_argument("--workers", default="0,1,2", help="grain worker counts to time")
  parser.add_argument("--host_seconds", type=float, default=6.0,
                      help="seconds each host pipeline measurement runs")
  parser.add_argument("--host_batch", default="64,32", help="host batch per size (32,224 px)")
  parser.add_argument("--augment_batch", default="64,16", help="device augment batch per size")
  parser.add_argument("--step_batch", default="32,8", help="train step batch per size")
  parser.add_argument("--step_data", default="both", choices=["synthetic", "pipeline", "both"])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--dtype", default="float32")
  return parser.parse_args(argv)


def _per_size(values: str, sizes: list[int]) -> dict[int, int]:
  numbers = [int(v) for v in values.split(",")]
  by_default_size = dict(zip((32, 224), numbers))
  return {size: by_default_size[size] for size in sizes}


def main(argv=None):
  args = parse_args(argv)
  cpu.configure()   # the process settings main.py makes, before JAX's backends exist
  sizes = [int(s) for s in args.sizes.split(",")]
  unknown = [size for size in sizes if size not in STORED_SIZES]
  if unknown:
    raise SystemExit(f"--sizes {unknown} not supported; choose from {sorted(STORED_SIZES)}")
  host_batch = _per_size(args.host_batch, sizes)
  augment_batch = _per_size(args.augment_batch, sizes)
  step_batch = _per_size(args.step_batch, sizes)

  def emit(record):
    print(json.dumps(dict(cpu_count=os.cpu_count(), **record)), flush=True)

  with tempfile.TemporaryDirectory(prefix="ssl_jax_input_bench_") as directory:
    for size in sizes:
      size_dir = os.path.join(directory, str(size))
      config = step_config(size, step_batch[size], args.dtype,
                           os.path.join(size_dir, "array_record"))
      emit(make_dataset(size_dir, size, args.num_images, config))
      emit(time_host_ops(config, min(args.num_images, 256)))
      host_records = []
      for num_workers in (int(w) for w in args.workers.split(",")):
        host_records.append(time_host_pipeline(config, host_batch[size], num_workers,
                                               args.host_seconds))
        emit(host_records[-1])
      augment_record = time_device_augment(config, augment_batch[size], repeats=5)
      emit(augment_record)
      step_records = time_train_step(config, args.step_data, args.steps)
      for record in step_records:
        emit(record)
      best_host = max(host_records, key=lambda record: record["img_per_s"])
      step_alone = step_records[0]
      emit({"kind": "summary", "image_size": size,
            "host_img_per_s": best_host["img_per_s"], "host_workers": best_host["workers"],
            "device_augment_img_per_s": augment_record["img_per_s"],
            "step_img_per_s": step_alone["img_per_s"], "step_data": step_alone["data"],
            "host_over_step": round(best_host["img_per_s"] / step_alone["img_per_s"], 2),
            "augment_share_of_step": round(step_alone["img_per_s"]
                                           / augment_record["img_per_s"], 3),
            "load_average_1min": _load()})


if __name__ == "__main__":
  main()
