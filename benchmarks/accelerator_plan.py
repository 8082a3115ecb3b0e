"""The measurements of benchmarks/accelerator.py, section by section, and the goals they answer.

Every record is one JSON line with its "section":

  device          backend, device kind and count, JAX version, host cores
  r50_synthetic   benchmarks/step.py's record for each objective and batch: ResNet-50 (ImageNet
                  stem) 224 px in bfloat16 on a device-resident random batch; images/s, MFU,
                  compile seconds, XLA's memory figures and the device's peak
  host_pipeline   benchmarks/input.py's records: the ArrayRecord set it writes (224 px from
                  256x320 JPEGs), one thread's decode and crop cost, and the grain two-view
                  stream's images/s for each worker count
  r50_pipeline    MoCo v2 at the pipeline batch fed by that stream (with the best worker count of
                  host_pipeline) and on synthetic data, one compile: pipeline_over_synthetic
  device_augment  the on-device augmentation alone at the same batch, and its share of the step
  r18_dispatch    ResNet-18 CIFAR at batch 512 for each objective and steps per dispatch
  bf16_learning   the same ResNet-18 CIFAR run (same init, same batches from an ArrayRecord set
                  of 32 px synthetic photos) in float32 and in bfloat16: loss and projection std
                  every few steps, and how far apart the two curves end
  skipped         a measurement not started because the budget was spent (rerun with --sections)
  summary         each goal of issue 31 with its target, floor and measured value

Sections run in that order, the goals' figures first; a measurement that would start after the
budget is reported as skipped instead, so the command always ends with its summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np

from benchmarks import input as input_benchmark
from benchmarks import step as step_benchmark
from benchmarks import workloads
from ssl_jax import sharding as sharding_lib
from ssl_jax.train import Experiment

SECTIONS = ("r50_synthetic", "host_pipeline", "r50_pipeline", "device_augment", "r18_dispatch",
            "bf16_learning")


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to measure. `FULL` is the GPU plan; `DRY_RUN` the same sections at sizes a CPU runs in
  seconds (small ResNets, 32 px, small batches, few steps, quick compiles)."""
  r50_objectives: tuple[str, ...]
  r50_batches: tuple[int, ...]
  r50_model: tuple[str, int]         # (name, width)
  image_size: int                    # of the ResNet-50 sections: 224, or 32 in the dry run
  pipeline_objective: str
  pipeline_batch: int
  pipeline_workers: tuple[int, ...]
  pipeline_images: int
  host_seconds: float
  r18_objectives: tuple[str, ...]
  r18_batch: int
  r18_width: int
  dispatch_counts: tuple[int, ...]
  learning_objective: str
  learning_batch: int
  learning_steps: int
  learning_images: int               # 32 px photos the run cycles through
  learning_record_every: int
  steps: int
  warmup: int
  quick_compile: bool


FULL = Plan(r50_objectives=("moco_v2", "simsiam", "byol"), r50_batches=(256, 128),
            r50_model=("resnet50", 64), image_size=224, pipeline_objective="moco_v2",
            pipeline_batch=256, pipeline_workers=(0, 4, 8, 16), pipeline_images=2048,
            host_seconds=6.0, r18_objectives=("moco_v2", "byol"), r18_batch=512, r18_width=64,
            dispatch_counts=(1, 4, 16), learning_objective="simsiam", learning_batch=256,
            learning_steps=300, learning_images=2048, learning_record_every=10, steps=10, warmup=2,
            quick_compile=False)
DRY_RUN = Plan(r50_objectives=("moco_v2", "simsiam", "byol"), r50_batches=(16,),
               r50_model=("resnet10", 4), image_size=32, pipeline_objective="moco_v2",
               pipeline_batch=16, pipeline_workers=(0, 1), pipeline_images=64, host_seconds=0.5,
               r18_objectives=("moco_v2",), r18_batch=16, r18_width=4, dispatch_counts=(2,),
               learning_objective="simsiam", learning_batch=16, learning_steps=4,
               learning_images=64, learning_record_every=2, steps=2, warmup=1,
               quick_compile=True)

# Issue 31's goals on one H100: (what, target, floor) in images/s, or a ratio.
GOALS = (("r50 moco_v2 bf16 synthetic img/s", 4500, 3000),
         ("r50 simsiam bf16 synthetic img/s", 3000, 3000),
         ("r50 byol bf16 synthetic img/s", 2250, 2250),
         ("r18 cifar img/s", 10000, 10000),
         ("pipeline / synthetic", 0.8, 0.8))


class Recorder:
  """Prints each record as a JSON line (and appends it to `out`); knows the budget."""

  def __init__(self, out: str, budget_s: float | None):
    self.out = out
    self.deadline = None if budget_s is None else time.monotonic() + budget_s
    self.records: list[dict] = []

  def emit(self, section: str, record: dict) -> dict:
    record = {"section": section, **record, "load_average_1min": round(os.getloadavg()[0], 2)}
    self.records.append(record)
    line = json.dumps(record)
    print(line, flush=True)
    if self.out:
      with open(self.out, "a") as f:
        f.write(line + "\n")
    return record

  def may_start(self, section: str, what: str) -> bool:
    """False (and a 'skipped' record) once the budget is spent."""
    if self.deadline is None or time.monotonic() < self.deadline:
      return True
    self.emit("skipped", {"skipped_section": section, "what": what,
                          "reason": "the budget was spent before it started"})
    return False


def _r50_config(plan: Plan, objective: str, batch: int, dtype: str = "bfloat16"):
  config = workloads.imagenet_work(objective, batch, dtype)
  name, width = plan.r50_model
  config.model.update(dict(name=name, width=width))
  config.data.image_size = plan.image_size
  config.quick_compile = plan.quick_compile
  return config


def _r18_config(plan: Plan, objective: str, batch: int, dtype: str = "float32"):
  config = workloads.cifar_work(objective, batch, dtype)
  config.model.width = plan.r18_width
  config.quick_compile = plan.quick_compile
  return config


def r50_synthetic(plan: Plan, recorder: Recorder, peak_tflops: float) -> None:
  for batch in plan.r50_batches:
    for objective in plan.r50_objectives:
      if recorder.may_start("r50_synthetic", f"{objective} batch {batch}"):
        for record in step_benchmark.benchmark(
            _r50_config(plan, objective, batch), data="synthetic", warmup=plan.warmup,
            steps=plan.steps, peak_tflops=peak_tflops):
          recorder.emit("r50_synthetic", record)


def _set_root(directory: str, config) -> str:
  """One set per preset and size (the converter records the preset's classes)."""
  return os.path.join(directory, f"{config.data.name}_{config.data.image_size}px", "array_record")


def _read_array_record_set(config, directory: str, images: int) -> dict | None:
  """Points `config` at the ArrayRecord set of synthetic photos at its image size, writing it
  with `images` photos first if this run has not; returns the convert record when it wrote."""
  root = _set_root(directory, config)
  written = None
  if not os.path.exists(root):
    written = input_benchmark.make_dataset(os.path.dirname(root), config.data.image_size,
                                           images, config)
  config.data.update(dict(source="array_record", root=root))
  return written


def host_pipeline(plan: Plan, recorder: Recorder, directory: str) -> int:
  """Writes the set, times the host stream per worker count; returns the best worker count."""
  config = _r50_config(plan, plan.pipeline_objective, plan.pipeline_batch)
  if not recorder.may_start("host_pipeline", f"writing {plan.pipeline_images} images"):
    return plan.pipeline_workers[-1]
  written = _read_array_record_set(config, directory, plan.pipeline_images)
  if written:
    recorder.emit("host_pipeline", written)
  recorder.emit("host_pipeline",
                input_benchmark.time_host_ops(config, min(256, plan.pipeline_images)))
  best = (0, -1.0)
  for workers in plan.pipeline_workers:
    if recorder.may_start("host_pipeline", f"{workers} workers"):
      record = recorder.emit("host_pipeline", input_benchmark.time_host_pipeline(
          config, plan.pipeline_batch, workers, plan.host_seconds))
      best = max(best, (workers, record["img_per_s"]), key=lambda pair: pair[1])
  return best[0]


def r50_pipeline(plan: Plan, recorder: Recorder, directory: str, workers: int) -> None:
  if not recorder.may_start("r50_pipeline", f"{plan.pipeline_objective} with {workers} workers"):
    return
  config = _r50_config(plan, plan.pipeline_objective, plan.pipeline_batch)
  _read_array_record_set(config, directory, plan.pipeline_images)
  config.data.num_workers = workers
  for record in step_benchmark.benchmark(config, data="both", warmup=plan.warmup,
                                         steps=plan.steps, peak_tflops=None):
    recorder.emit("r50_pipeline", dict(record, workers=workers))


def device_augment(plan: Plan, recorder: Recorder) -> None:
  if not recorder.may_start("device_augment", f"batch {plan.pipeline_batch}"):
    return
  config = _r50_config(plan, plan.pipeline_objective, plan.pipeline_batch)
  record = input_benchmark.time_device_augment(config, plan.pipeline_batch, repeats=plan.steps + 3)
  step_records = [r for r in recorder.records if r["section"] == "r50_synthetic"
                  and r["objective"] == plan.pipeline_objective
                  and r["batch"] == plan.pipeline_batch]
  if step_records:   # augmenting B images takes this share of a step over B images
    record["share_of_step"] = round(step_records[0]["img_per_s"] / record["img_per_s"], 3)
  recorder.emit("device_augment", record)


def r18_dispatch(plan: Plan, recorder: Recorder) -> None:
  for objective in plan.r18_objectives:
    for count in plan.dispatch_counts:
      if recorder.may_start("r18_dispatch", f"{objective} x{count}"):
        for record in step_benchmark.benchmark(
            _r18_config(plan, objective, plan.r18_batch), data="synthetic", warmup=plan.warmup,
            steps=plan.steps, peak_tflops=None, steps_per_dispatch=count):
          recorder.emit("r18_dispatch", record)


def _loss_curve(config, steps: int, every: int) -> list[dict]:
  """[{'step', 'loss', 'projection_std'}] every `every` steps of a fresh run of `config`."""
  experiment = Experiment(config, workdir=None)
  state, shardings = experiment.initial_state()
  train_step = experiment.jitted_train_step(shardings)
  iterator = iter(experiment.train_dataset())
  curve = []
  for step in range(1, steps + 1):
    batch = sharding_lib.host_batch_to_global(next(iterator), experiment.mesh)
    state, metrics = train_step(state, batch)
    if step % every == 0 or step == 1:
      values = metrics.compute()
      curve.append({"step": step, "loss": round(float(values["loss"]), 5),
                    "projection_std": round(float(values["projection_std"]), 5)})
  iterator.close()
  return curve


def bf16_learning(plan: Plan, recorder: Recorder, directory: str) -> None:
  if not recorder.may_start("bf16_learning", f"{plan.learning_objective} float32 and bfloat16"):
    return
  curves = {}
  for dtype in ("float32", "bfloat16"):
    config = _r18_config(plan, plan.learning_objective, plan.learning_batch, dtype)
    config.num_steps = plan.learning_steps
    _read_array_record_set(config, directory, plan.learning_images)
    start = time.perf_counter()
    curves[dtype] = _loss_curve(config, plan.learning_steps, plan.learning_record_every)
    recorder.emit("bf16_learning", {"objective": plan.learning_objective, "dtype": dtype,
                                    "batch": plan.learning_batch, "steps": plan.learning_steps,
                                    "seconds": round(time.perf_counter() - start, 2),
                                    "curve": curves[dtype]})
  final = {dtype: statistics.mean(point["loss"] for point in curve[-3:])
           for dtype, curve in curves.items()}
  start = curves["float32"][0]["loss"]
  recorder.emit("bf16_learning", {
      "objective": plan.learning_objective, "float32_final_loss": round(final["float32"], 5),
      "bfloat16_final_loss": round(final["bfloat16"], 5), "initial_loss": start,
      # Of the float32 run's loss drop, how much the bfloat16 run's final loss is off by.
      "gap_over_float32_drop": round(abs(final["bfloat16"] - final["float32"])
                                     / max(abs(start - final["float32"]), 1e-12), 4)})


def _best(records: list[dict], section: str, **match) -> float | None:
  values = [r["img_per_s"] for r in records if r["section"] == section
            and r.get("data", "synthetic") == "synthetic"
            and all(r.get(key) == value for key, value in match.items())]
  return max(values) if values else None


def summary(recorder: Recorder) -> None:
  records = recorder.records
  pipeline = [r["pipeline_over_synthetic"] for r in records
              if r["section"] == "r50_pipeline" and "pipeline_over_synthetic" in r]
  measured = {
      "r50 moco_v2 bf16 synthetic img/s": _best(records, "r50_synthetic", objective="moco_v2"),
      "r50 simsiam bf16 synthetic img/s": _best(records, "r50_synthetic", objective="simsiam"),
      "r50 byol bf16 synthetic img/s": _best(records, "r50_synthetic", objective="byol"),
      "r18 cifar img/s": _best(records, "r18_dispatch"),
      "pipeline / synthetic": pipeline[0] if pipeline else None,
  }
  goals = [{"goal": goal, "target": target, "floor": floor, "measured": measured[goal],
            "met_target": None if measured[goal] is None else measured[goal] >= target}
           for goal, target, floor in GOALS]
  recorder.emit("summary", {"backend": jax.default_backend(), "goals": goals})


def run(args) -> int:
  plan = DRY_RUN if args.dry_run else FULL
  budget = args.budget_s if args.budget_s is not None else (None if args.dry_run else 420.0)
  sections = tuple(s for s in args.sections.split(",") if s) or SECTIONS
  unknown = [s for s in sections if s not in SECTIONS]
  if unknown:
    raise SystemExit(f"error: unknown sections {unknown}; allowed: {list(SECTIONS)}")
  recorder = Recorder(args.out, budget)
  device = jax.devices()[0]
  recorder.emit("device", {"backend": jax.default_backend(), "device_kind": device.device_kind,
                           "devices": jax.device_count(), "jax": jax.__version__,
                           "cpu_count": os.cpu_count(), "dry_run": args.dry_run,
                           "plan": dataclasses.asdict(plan)})
  with tempfile.TemporaryDirectory(prefix="ssl_jax_accelerator_") as directory:
    if "r50_synthetic" in sections:
      r50_synthetic(plan, recorder, args.peak_tflops)
    workers = plan.pipeline_workers[-1]
    if "host_pipeline" in sections:
      workers = host_pipeline(plan, recorder, directory)
    if "r50_pipeline" in sections:
      r50_pipeline(plan, recorder, directory, workers)
    if "device_augment" in sections:
      device_augment(plan, recorder)
    if "r18_dispatch" in sections:
      r18_dispatch(plan, recorder)
    if "bf16_learning" in sections:
      bf16_learning(plan, recorder, directory)
  summary(recorder)
  return 0
