r"""The accelerator benchmark: every open GPU question of docs/performance.md in one command.

  python benchmarks/accelerator.py --out=accelerator.jsonl     # on a GPU (or TPU) host
  python benchmarks/accelerator.py --dry_run                   # CPU, tiny shapes (in the suite)

It measures, within --budget_s (default 420 s, so one 10-minute call of a lent GPU holds it with
its start-up): ResNet-50 224 px bfloat16 MoCo v2 / SimSiam / BYOL on device-resident random data
(images/s, MFU, peak memory, compile time), the grain host pipeline with 0/4/8/16 workers on an
ArrayRecord set it writes, the MoCo v2 step fed by that pipeline against the same step on
synthetic data, the on-device augmentation's share of the step, ResNet-18 CIFAR MoCo v2 and BYOL
at batch 512 with 1/4/16 steps per dispatch, and a short float32-against-bfloat16 training run.
The sections and their records are described in benchmarks/accelerator_plan.py; the last line
is the summary of every goal of issue 31 against its measurement.

This file only checks the environment, before anything heavy is imported, so that a device
image without the carried wheels or a machine without an accelerator gets one clear line:

- packages the device image lacks (grain, array_record, ml_collections, clu) are carried as
  wheels: `bash benchmarks/device_wheels.sh` here fills .whl/ (about 5 MB), and the device
  command starts by installing them (benchmarks/README.md, "On a lent GPU");
- without an accelerator it exits 2 unless --dry_run, which runs the same sections at tiny shapes
  on whatever backend there is.
"""

from __future__ import annotations

import argparse
import os
import sys

# Imported by the measurements, absent from the device image (carried as wheels there).
CARRIED_PACKAGES = {"grain": "grain", "array_record": "array-record",
                    "ml_collections": "ml-collections", "clu": "clu"}
ACCELERATOR_BACKENDS = ("gpu", "cuda", "rocm", "tpu")


def missing_packages() -> list[str]:
  """The distribution names of CARRIED_PACKAGES that this Python cannot import."""
  missing = []
  for module, distribution in CARRIED_PACKAGES.items():
    try:
      __import__(module)
    except ImportError:
      missing.append(distribution)
  return missing


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dry_run", action="store_true",
                      help="tiny shapes on any backend (CPU included): checks the command runs")
  parser.add_argument("--out", default="", help="also append every JSON line to this file")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="seconds after which no new measurement starts (default: 420, dry "
                           "run: unlimited)")
  parser.add_argument("--sections", default="",
                      help="comma-separated sections to run (default: all, in order)")
  parser.add_argument("--peak_tflops", type=float, default=989.0,
                      help="the device's dense bf16 peak for MFU (H100 SXM: 989)")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  missing = missing_packages()
  if missing:
    print(f"error: missing packages {', '.join(missing)}: the benchmark imports them. On the "
          "device image carry them as wheels: run `bash benchmarks/device_wheels.sh` here, name "
          ".whl in the call's carry, and install them first (benchmarks/README.md, 'On a lent "
          "GPU'); elsewhere `pip install -e .`", file=sys.stderr)
    return 2

  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax   # after the check: jax is in every image, the rest may not be
  from ssl_jax import cpu

  cpu.configure()   # as main.py, before JAX creates its backends (it sets only CPU options)
  backend = jax.default_backend()
  if backend not in ACCELERATOR_BACKENDS and not args.dry_run:
    print(f"error: no accelerator: JAX's backend is {backend!r} ({len(jax.devices())} "
          f"{jax.devices()[0].platform} devices). This benchmark measures GPU/TPU goals; "
          "--dry_run runs it at tiny shapes on this backend.", file=sys.stderr)
    return 2

  from benchmarks import accelerator_plan
  return accelerator_plan.run(args)


if __name__ == "__main__":
  sys.exit(main())
