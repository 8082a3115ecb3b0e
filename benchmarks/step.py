r"""Step benchmark: the jitted train step of each objective, timed alone or fed by the pipeline.

  python benchmarks/step.py --workload=peer --objectives=moco_v2,byol,simsiam --batch=64,128
  python benchmarks/step.py --workload=imagenet_r50 --objectives=moco_v2 --batch=128 \
      --peak_tflops=989                                      # H100 bf16 dense peak
  python benchmarks/step.py --workload=cifar_r18 --data=both --batch=256
  python benchmarks/step.py --workload=peer --objectives=moco_v2 --batch=64 --quick_compile=both
  python benchmarks/step.py --workload=cifar_r18 --objectives=moco_v2,byol --batch=512 \
      --steps_per_dispatch=1,8                               # lax.scan: 8 steps per call
  python benchmarks/step.py --workload=peer --objectives=simsiam --batch=64 --conv_impl=xla

Prints one JSON line per (objective, batch, data, steps per dispatch): median and min step
seconds after warm-up (each call waited for), the step time of as many calls dispatched back to
back and waited for once (as the train loop runs them), images/s, compile seconds, XLA's FLOP
count of one step and the achieved FLOP/s (with MFU when --peak_tflops is given), and memory
(XLA's buffer analysis of the compiled program, plus the device's peak where the backend reports
one).

--data=synthetic feeds one device-resident random batch, so it measures the step alone;
--data=pipeline feeds the config's real input pipeline (host crops, host->device transfer);
--data=both does both and adds pipeline/synthetic throughput.
--quick_compile=both times each config compiled fully and with config.quick_compile, one after
the other (the compile-time against step-time trade of ssl_jax/quick_compile.py).
--steps_per_dispatch=K runs K steps per call, a `lax.scan` over a buffer of K batches
(`ssl_jax.step.jit_multi_step`): for small models whose steps are bound by the host's dispatch
rather than the device. --steps then counts calls, step times are a call's time / K, and the
memory figures include the buffer of K batches.
--conv_impl sets config.model.conv_impl, the backbone's convolution ('auto', as the configs:
the CPU one of ssl_jax.cpu in a one-process CPU job; 'xla': the plain nn.Conv). The process
settings of ssl_jax.cpu.configure() are made first, as main.py makes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import workloads  # noqa: E402
from input_pipeline.device_augment import VIEW_NAMES  # noqa: E402
from ssl_jax import cpu  # noqa: E402
from ssl_jax import models  # noqa: E402
from ssl_jax import sharding as sharding_lib  # noqa: E402
from ssl_jax.train import Experiment  # noqa: E402


def _flops_of(compiled) -> float | None:
  """XLA's FLOP count of one call (cost_analysis is a dict, or a list of one per program)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  return float(analysis["flops"])


def _memory_of(compiled) -> dict[str, int]:
  """Bytes XLA allocates for one call: arguments, outputs and temporaries (donated inputs alias
  outputs, so `peak_estimate` counts them once)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return {}
  arguments = int(stats.argument_size_in_bytes)
  outputs = int(stats.output_size_in_bytes)
  aliased = int(stats.alias_size_in_bytes)
  temporaries = int(stats.temp_size_in_bytes)
  return {"argument_bytes": arguments, "output_bytes": outputs, "temp_bytes": temporaries,
          "peak_estimate_bytes": arguments + outputs - aliased + temporaries}


def _device_peak_bytes(device) -> int | None:
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _random_host_batch(experiment: Experiment, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Random views and labels shaped as the input pipeline's batches (the same pytree, so the
  step compiled for it also takes the pipeline's)."""
  shape = (experiment.global_batch,) + experiment.image_shape
  batch = {name: rng.integers(0, 256, shape, dtype=np.uint8) for name in VIEW_NAMES}
  data = experiment.config.data
  if data.label_type == "multi_label":   # a 0/1 vector per image
    labels = rng.integers(0, 2, (experiment.global_batch, data.num_classes))
  else:
    labels = rng.integers(0, max(1, data.num_classes), (experiment.global_batch,))
  batch["label"] = labels.astype(np.int32)
  return batch


def random_batch(experiment: Experiment, seed: int = 0) -> dict[str, jax.Array]:
  """One global uint8 two-view batch of random images, placed on the mesh once."""
  host = _random_host_batch(experiment, np.random.default_rng(seed))
  return sharding_lib.host_batch_to_global(host, experiment.mesh)


def random_batch_buffer(experiment: Experiment, steps: int, seed: int = 0) -> dict[str, jax.Array]:
  """`steps` different random batches stacked into one device-resident (steps, batch, ...)
  buffer, the input of a multi-step dispatch."""
  rng = np.random.default_rng(seed)
  return sharding_lib.host_batches_to_global_buffer(
      [_random_host_batch(experiment, rng) for _ in range(steps)], experiment.mesh)


def time_steps(run_one_call, state, warmup: int, calls: int):
  """Runs `warmup` then `calls` calls, each waited for; returns (state, wall seconds per call,
  CPU seconds per call). On a shared host the process's CPU time is the steadier of the two."""
  for _ in range(warmup):
    state = jax.block_until_ready(run_one_call(state))
  wall, cpu = [], []
  for _ in range(calls):
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    state = jax.block_until_ready(run_one_call(state))
    wall.append(time.perf_counter() - wall_start)
    cpu.append(time.process_time() - cpu_start)
  return state, wall, cpu


def time_back_to_back(run_one_call, state, calls: int):
  """Dispatches `calls` calls without waiting in between, as the train loop does, and waits once;
  returns (state, wall seconds per call). Unlike `time_steps`, the host's dispatch of a call
  overlaps the device's work on the previous one, which is what several steps per dispatch
  would otherwise save."""
  start = time.perf_counter()
  for _ in range(calls):
    state = run_one_call(state)
  state = jax.block_until_ready(state)
  return state, (time.perf_counter() - start) / calls


def benchmark(config, *, data: str, warmup: int, steps: int, peak_tflops: float | None,
              devices=None, steps_per_dispatch: int = 1) -> list[dict]:
  """Times one config's train step; returns one record per data mode ('synthetic', 'pipeline').

  With `steps_per_dispatch` > 1 each call runs that many steps over a device-resident buffer of
  batches (`step.jit_multi_step`); the record's step times are a call's time divided by it."""
  experiment = Experiment(config, workdir=None, devices=devices)
  state, state_shardings = experiment.initial_state()
  mesh = experiment.mesh
  if steps_per_dispatch == 1:
    jitted = experiment.jitted_train_step(state_shardings)
    batch = random_batch(experiment)
    next_pipeline_input = lambda iterator: sharding_lib.host_batch_to_global(  # noqa: E731
        next(iterator), mesh)
  else:
    jitted = experiment.jitted_multi_step(state_shardings, steps_per_dispatch)
    batch = random_batch_buffer(experiment, steps_per_dispatch)
    next_pipeline_input = lambda iterator: sharding_lib.host_batches_to_global_buffer(  # noqa: E731
        [next(iterator) for _ in range(steps_per_dispatch)], mesh)

  start = time.perf_counter()
  compiled = jitted.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  # XLA:CPU's cost analysis counted the loop body once, so there a multi-step program's count is
  # one step's (SimSiam at test size: 1.606 GFLOP for 4 scanned steps, 1.615 for one step). On
  # another backend, compare with the steps_per_dispatch=1 record of the same run.
  flops = _flops_of(compiled)
  device = mesh.devices.flat[0]
  common_record = {
      "objective": config.objective, "model": config.model.name, "stem": config.model.stem,
      "image_size": config.data.image_size, "batch": experiment.global_batch,
      "dtype": config.model.dtype, "conv_impl": config.model.conv_impl,
      "backend": jax.default_backend(),
      "devices": int(mesh.devices.size), "quick_compile": config.quick_compile,
      "steps_per_dispatch": steps_per_dispatch,
      "compile_s": round(compile_seconds, 3),
      "step_gflops": None if flops is None else round(flops / 1e9, 2),
      **_memory_of(compiled),
  }

  modes = ("synthetic", "pipeline") if data == "both" else (data,)
  records = []
  for mode in modes:
    if mode == "synthetic":
      run_one_call = lambda state: compiled(state, batch)[0]  # noqa: E731
    elif mode == "pipeline":
      iterator = iter(experiment.train_dataset())
      run_one_call = lambda state: compiled(state, next_pipeline_input(iterator))[0]  # noqa: E731
    else:
      raise ValueError(f"unknown data mode {mode!r}: choose synthetic, pipeline or both")
    state, call_durations, call_cpu_durations = time_steps(run_one_call, state, warmup, steps)
    state, back_to_back_call = time_back_to_back(run_one_call, state, steps)
    durations = [d / steps_per_dispatch for d in call_durations]
    cpu_durations = [d / steps_per_dispatch for d in call_cpu_durations]
    median = statistics.median(durations)
    back_to_back = back_to_back_call / steps_per_dispatch
    record = dict(common_record, data=mode, steps=steps * steps_per_dispatch,
                  median_step_s=round(median, 5), min_step_s=round(min(durations), 5),
                  median_step_cpu_s=round(statistics.median(cpu_durations), 5),
                  back_to_back_step_s=round(back_to_back, 5),
                  back_to_back_img_per_s=round(experiment.global_batch / back_to_back, 1),
                  img_per_s=round(experiment.global_batch / median, 1),
                  load_average_1min=round(os.getloadavg()[0], 2))
    if flops is not None:
      record["achieved_tflops"] = round(flops / median / 1e12, 4)
      if peak_tflops:
        record["mfu"] = round(flops / median / (peak_tflops * 1e12), 4)
    peak = _device_peak_bytes(device)
    if peak is not None:
      record["device_peak_bytes"] = peak
    records.append(record)
  if len(records) == 2:
    records[1]["pipeline_over_synthetic"] = round(records[1]["img_per_s"] / records[0]["img_per_s"], 3)
  return records


QUICK_COMPILE_MODES = {"off": (False,), "on": (True,), "both": (False, True)}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workload", default="peer", choices=sorted(workloads.WORKLOADS))
  parser.add_argument("--objectives", default=",".join(workloads.PEER_OBJECTIVES),
                      help="comma-separated config names, e.g. moco_v2,byol")
  parser.add_argument("--batch", default="64,128", help="comma-separated global batch sizes")
  parser.add_argument("--dtype", default=None, help="compute dtype override (float32, bfloat16)")
  parser.add_argument("--data", default="synthetic", choices=["synthetic", "pipeline", "both"])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the device's peak TFLOP/s for MFU (H100 SXM bf16 dense: 989)")
  parser.add_argument("--devices", type=int, default=0, help="use the first N devices (0: all)")
  parser.add_argument("--steps_per_dispatch", default="1",
                      help="comma-separated steps per call (lax.scan over a buffer of batches)")
  parser.add_argument("--quick_compile", default="off", choices=sorted(QUICK_COMPILE_MODES),
                      help="config.quick_compile: off, on, or both (one after the other)")
  add_conv_impl_argument(parser)
  args = parser.parse_args(argv)
  counts = args.steps_per_dispatch.split(",")
  if not all(count.isdigit() and int(count) > 0 for count in counts):
    parser.error(f"--steps_per_dispatch takes comma-separated positive integers (e.g. 1,4,16), "
                 f"got {args.steps_per_dispatch!r}")
  args.steps_per_dispatch = [int(count) for count in counts]
  return args


def add_conv_impl_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--conv_impl", default="auto", choices=models.CONV_IMPLS,
                      help="config.model.conv_impl: the backbone's convolution")


def main(argv=None):
  args = parse_args(argv)
  cpu.configure()   # before anything below creates JAX's backends
  devices = jax.devices()[:args.devices] if args.devices > 0 else None
  build = workloads.WORKLOADS[args.workload]
  for objective in args.objectives.split(","):
    for batch_size in (int(b) for b in args.batch.split(",")):
      config = build(objective, batch_size)
      config.model.conv_impl = args.conv_impl
      if args.dtype:
        config.model.dtype = args.dtype
      for quick in QUICK_COMPILE_MODES[args.quick_compile]:
        config.quick_compile = quick
        for steps_per_dispatch in args.steps_per_dispatch:
          for record in benchmark(config, data=args.data, warmup=args.warmup, steps=args.steps,
                                  peak_tflops=args.peak_tflops, devices=devices,
                                  steps_per_dispatch=steps_per_dispatch):
            print(json.dumps(dict(impl="ssl_jax", workload=args.workload, **record)), flush=True)


if __name__ == "__main__":
  main()
