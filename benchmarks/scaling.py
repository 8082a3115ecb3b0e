r"""Scaling curves: images/s against batch size, and compile time against model size.

  python benchmarks/scaling.py --sweep=batch --values=16,32,64,128
  python benchmarks/scaling.py --sweep=model --values=resnet10,resnet18,resnet34,resnet50
  python benchmarks/scaling.py --sweep=batch --workload=imagenet_r50 --values=64,128,256   # GPU

Each point is one `benchmarks/step.py` measurement of the workload (default: the peer's work,
ResNet-18 CIFAR stem at 32 px), printed as a JSON line with the swept value; `--width` shrinks
the network for a quick CPU curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from benchmarks import workloads  # noqa: E402
from benchmarks.step import add_conv_impl_argument, benchmark  # noqa: E402
from ssl_jax import cpu  # noqa: E402

SWEEPS = ("batch", "model")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sweep", required=True, choices=SWEEPS)
  parser.add_argument("--values", required=True, help="comma-separated batch sizes or ResNets")
  parser.add_argument("--workload", default="peer", choices=sorted(workloads.WORKLOADS))
  parser.add_argument("--objective", default="moco_v2")
  parser.add_argument("--batch", type=int, default=64, help="batch of the model sweep")
  parser.add_argument("--model", default="resnet18", help="ResNet of the batch sweep")
  parser.add_argument("--width", type=int, default=64, help="channels of the first stage")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  add_conv_impl_argument(parser)
  args = parser.parse_args(argv)
  cpu.configure()   # the process settings main.py makes, before JAX's backends exist

  for value in args.values.split(","):
    batch = int(value) if args.sweep == "batch" else args.batch
    config = workloads.WORKLOADS[args.workload](args.objective, batch)
    config.model.conv_impl = args.conv_impl
    config.model.name = value if args.sweep == "model" else args.model
    config.model.width = args.width
    (record,) = benchmark(config, data="synthetic", warmup=args.warmup, steps=args.steps,
                          peak_tflops=None)
    print(json.dumps(dict(sweep=args.sweep, value=value, workload=args.workload, **record)),
          flush=True)


if __name__ == "__main__":
  main()
