r"""The native CPU weight-gradient kernel against XLA's (Eigen's), per ResNet-18 CIFAR layer.

  python benchmarks/weight_grad_kernel.py                 # batch 64, 3 rounds
  python benchmarks/weight_grad_kernel.py --batch=128 --rounds=5

For every distinct convolution of the ResNet-18 CIFAR backbone (the stem, the stride-1 3x3
layers, the stride-2 3x3 layers and 1x1 shortcuts) it times the weight gradient both ways in one
process, with the process settings of `ssl_jax.cpu.configure()`: `weight_grad_kernel.weight_grad`
and `convolution.transposed_weight_grad` (the way used without the kernel, transposes included).
A round times each layer once each way; the table gives the median times and the median over
rounds of each round's native/XLA ratio. (`conv_impl='cpu_native'` uses the kernel for all of
them in a one-device CPU job.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.timing import median_ms  # noqa: E402
from ssl_jax import cpu  # noqa: E402
from ssl_jax.cpu import convolution, weight_grad_kernel  # noqa: E402

# (input size, in channels, out channels, window, stride) of ResNet-18 CIFAR's convolutions.
LAYERS = (
    (32, 3, 64, 3, 1),      # stem
    (32, 64, 64, 3, 1),
    (32, 64, 128, 3, 2),
    (32, 64, 128, 1, 2),    # shortcut
    (16, 128, 128, 3, 1),
    (16, 128, 256, 3, 2),
    (16, 128, 256, 1, 2),
    (8, 256, 256, 3, 1),
    (8, 256, 512, 3, 2),
    (8, 256, 512, 1, 2),
    (4, 512, 512, 3, 1),
)


def layer_operands(batch: int, size: int, channels: int, features: int, window: int,
                   stride: int):
  pad = window // 2
  out = (size + 2 * pad - window) // stride + 1
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, channels)), jnp.float32)
  output_grad = jnp.asarray(rng.standard_normal((batch, out, out, features)), jnp.float32)
  kernel = jnp.zeros((window, window, channels, features), jnp.float32)
  return x, kernel, output_grad, (stride, stride), ((pad, pad), (pad, pad))


def compiled_pair(batch: int, layer: tuple[int, ...]):
  """Both ways of one layer's weight gradient, compiled, with their operands."""
  x, kernel, output_grad, strides, padding = layer_operands(batch, *layer)
  native = jax.jit(lambda x_, dy: weight_grad_kernel.weight_grad(x_, dy, kernel.shape[:2],
                                                                 strides, padding))
  transposed = jax.jit(lambda x_, dy: convolution.transposed_weight_grad(
      x_, kernel, dy, strides=strides, padding=padding))
  ways = {"native": native, "xla": transposed}
  compiled = {name: way.lower(x, output_grad).compile() for name, way in ways.items()}
  return compiled, (x, output_grad)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=10, help="timed calls per layer and way")
  parser.add_argument("--rounds", type=int, default=3, help="native-then-XLA repetitions")
  args = parser.parse_args(argv)
  if args.batch < 1 or args.repeats < 1 or args.rounds < 1:
    parser.error(f"--batch, --repeats and --rounds must be at least 1, got {args.batch}, "
                 f"{args.repeats}, {args.rounds}")
  cpu.configure()   # the process settings main.py makes, before JAX's backends exist
  if not weight_grad_kernel.available():
    parser.error("the native kernel did not build (the warning above says why)")

  pairs = [compiled_pair(args.batch, layer) for layer in LAYERS]
  times = {layer: {"native": [], "xla": []} for layer in LAYERS}
  for round_index in range(args.rounds):
    for layer, (compiled, operands) in zip(LAYERS, pairs):
      for name, function in compiled.items():
        ms = median_ms(lambda: jax.block_until_ready(function(*operands)), args.repeats)
        times[layer][name].append(ms)
        print(json.dumps({"round": round_index, "batch": args.batch, "layer": layer, "way": name,
                          "median_ms": round(ms, 3)}), flush=True)

  rows = []
  for layer in LAYERS:
    native_ms, xla_ms = times[layer]["native"], times[layer]["xla"]
    rows.append({"batch": args.batch, "layer": layer,
                 "native_ms": round(statistics.median(native_ms), 3),
                 "xla_ms": round(statistics.median(xla_ms), 3),
                 "native_over_xla": round(statistics.median(
                     n / x for n, x in zip(native_ms, xla_ms)), 3)})
  print(f"\n{'size':>4} {'in':>4} {'out':>4} {'k':>2} {'s':>2} {'native ms':>10} {'xla ms':>8} "
        f"{'native/xla':>10}")
  for row in rows:
    size, channels, features, window, stride = row["layer"]
    print(f"{size:>4} {channels:>4} {features:>4} {window:>2} {stride:>2} {row['native_ms']:10.2f} "
          f"{row['xla_ms']:8.2f} {row['native_over_xla']:10.3f}")
  for row in rows:
    print(json.dumps({"summary": True, **row}))

if __name__ == "__main__":
  main()
