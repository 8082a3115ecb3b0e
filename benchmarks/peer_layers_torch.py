"""The peer's side of benchmarks/layers.py: torch's layers, timed on the CPU.

Runs under the peer's Python (/tmp/ssl-peer-venv); it needs torch alone. The layers and shapes
are those of benchmarks/layers.py, in NCHW as lightly's ResNet-18 runs them; the convolution's
two gradients are timed apart and together (one call, as autograd makes it) with
`torch.ops.aten.convolution_backward` and its output mask. Prints one JSON line per (stage,
operation).
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import median_ms   # benchmarks/timing.py: this script's directory is on sys.path


def time_stage(batch: int, size: int, channels: int, repeats: int) -> dict[str, float]:
  torch.manual_seed(0)
  x = torch.randn(batch, channels, size, size)
  weight = torch.randn(channels, channels, 3, 3) / (9 * channels) ** 0.5
  output_grad = torch.randn(batch, channels, size, size)

  def convolution_grads(mask):
    return torch.ops.aten.convolution_backward(
        output_grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

  norm = torch.nn.BatchNorm2d(channels)
  x_grad = x.clone().requires_grad_(True)

  def norm_relu_forward_backward():
    x_grad.grad = None
    norm.zero_grad()
    torch.relu(norm(x_grad)).backward(output_grad)

  with torch.no_grad():
    times = {
        "conv_forward": median_ms(
            lambda: torch.nn.functional.conv2d(x, weight, padding=1), repeats),
        "conv_input_grad": median_ms(lambda: convolution_grads([True, False, False]), repeats),
        "conv_weight_grad": median_ms(lambda: convolution_grads([False, True, False]), repeats),
        "conv_backward": median_ms(lambda: convolution_grads([True, True, False]), repeats),
    }
  times["bn_relu_forward_backward"] = median_ms(norm_relu_forward_backward, repeats)
  return times


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--stages", required=True, help="size:channels,... e.g. 32:64,16:128")
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args(argv)
  torch.set_num_threads(args.threads)
  for stage in args.stages.split(","):
    size, channels = (int(value) for value in stage.split(":"))
    for operation, ms in time_stage(args.batch, size, channels, args.repeats).items():
      print(json.dumps({"impl": "torch", "torch": torch.__version__, "batch": args.batch,
                        "size": size, "channels": channels, "operation": operation,
                        "median_ms": round(ms, 3)}), flush=True)


if __name__ == "__main__":
  main()
