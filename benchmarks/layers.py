r"""Layer by layer on the CPU: our convolution and BatchNorm against torch's, at the peer's shapes.

  bash ../shared/bench/setup_peer.sh          # once: the peer's venv in /tmp/ssl-peer-venv
  python benchmarks/layers.py                 # ResNet-18 CIFAR stages, batch 64, 3 rounds

Where compare_peer.py says how much slower or faster a whole step is, this says where: for each
stage of the ResNet-18 CIFAR backbone (32 px x 64 channels down to 4 px x 512) it times one 3x3
convolution's forward pass, its input gradient and weight gradient apart and together (the
backward pass), and one BatchNorm+ReLU forward and backward. Ours is XLA:CPU with the process
settings of `ssl_jax.cpu.configure()` (`ssl_jax.cpu.convolution.conv2d`, the convolution CPU
training uses, and `GroupedBatchNorm`, NHWC; the weight gradient is what conv2d runs in a
one-device job, the native kernel, or XLA's with its transposes where that kernel cannot be
built), torch's is benchmarks/peer_layers_torch.py (NCHW, as lightly runs it, with as many
threads as the cores this process may use); the two run in fresh processes one after the other.
A round runs both once; the table gives ours/torch as the median over rounds of each round's
ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from benchmarks.timing import median_ms  # noqa: E402

# (size, channels) of the ResNet-18 CIFAR stages' stride-1 3x3 convolutions.
STAGES = ((32, 64), (16, 128), (8, 256), (4, 512))


def time_our_stage(batch: int, size: int, channels: int, repeats: int) -> dict[str, float]:
  from ssl_jax.cpu.convolution import conv2d
  from ssl_jax.models import GroupedBatchNorm

  import jax
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, channels)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((3, 3, channels, channels)) / (9 * channels) ** 0.5,
                       jnp.float32)
  output_grad = jnp.asarray(rng.standard_normal((batch, size, size, channels)), jnp.float32)
  padding = ((1, 1), (1, 1))
  convolve = lambda x_, kernel_: conv2d(x_, kernel_, (1, 1), padding)
  input_grad = lambda kernel_, dy: jax.vjp(lambda x_: convolve(x_, kernel_), x)[1](dy)[0]
  weight_grad = lambda x_, dy: jax.vjp(lambda k_: convolve(x_, k_), kernel)[1](dy)[0]
  both_grads = lambda x_, kernel_, dy: jax.vjp(convolve, x_, kernel_)[1](dy)

  norm = GroupedBatchNorm()
  variables = norm.init(jax.random.key(0), x, True)

  def norm_relu_vjp(params, x_, dy):
    def forward(params_, x__):
      y, _ = norm.apply({"params": params_, "batch_stats": variables["batch_stats"]}, x__, True,
                        mutable=["batch_stats"])
      return jax.nn.relu(y)
    return jax.vjp(forward, params, x_)[1](dy)

  cases = {
      "conv_forward": (convolve, (x, kernel)),
      "conv_input_grad": (input_grad, (kernel, output_grad)),
      "conv_weight_grad": (weight_grad, (x, output_grad)),
      "conv_backward": (both_grads, (x, kernel, output_grad)),
      "bn_relu_forward_backward": (norm_relu_vjp, (variables["params"], x, output_grad)),
  }
  times = {}
  for operation, (function, arguments) in cases.items():
    compiled = jax.jit(function).lower(*arguments).compile()
    times[operation] = median_ms(lambda: jax.block_until_ready(compiled(*arguments)), repeats)
  return times


def parse_stages(text: str) -> list[tuple[int, int]]:
  """'32:64,16:128' -> [(32, 64), (16, 128)]; ValueError naming the expected form otherwise."""
  stages = []
  for stage in text.split(","):
    parts = stage.split(":")
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
      raise ValueError(f"--stages wants size:channels,... with positive integers (e.g. "
                       f"32:64,16:128), got {stage!r}")
    stages.append((int(parts[0]), int(parts[1])))
  return stages


def _json_lines(command: list[str]) -> list[dict]:
  """Runs a measuring child; its stderr is shown if it fails."""
  result = subprocess.run(command, capture_output=True, text=True, cwd=_ROOT)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                       f"{result.stderr[-3000:]}")
  return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def run_ours(batch: int, stages: str, repeats: int) -> list[dict]:
  return _json_lines([sys.executable, os.path.abspath(__file__), "--measure_ours",
                      f"--batch={batch}", f"--stages={stages}", f"--repeats={repeats}"])


def run_peer(python: str, batch: int, stages: str, repeats: int, threads: int) -> list[dict]:
  return _json_lines([python, os.path.join(_ROOT, "benchmarks", "peer_layers_torch.py"),
                      f"--batch={batch}", f"--stages={stages}", f"--repeats={repeats}",
                      f"--threads={threads}"])


def summarise(rounds: list[tuple[list[dict], list[dict]]]) -> list[dict]:
  """Per (stage, operation): the median of ours and of torch's times, and the median over rounds
  of each round's ours/torch."""
  def by_key(records):
    return {(r["size"], r["channels"], r["operation"]): r["median_ms"] for r in records}
  keyed = [(by_key(ours), by_key(peer)) for ours, peer in rounds]
  rows = []
  for key in keyed[0][0]:
    ours_ms = [ours[key] for ours, _ in keyed]
    peer_ms = [peer[key] for _, peer in keyed]
    rows.append({"size": key[0], "channels": key[1], "operation": key[2],
                 "ours_ms": round(statistics.median(ours_ms), 2),
                 "torch_ms": round(statistics.median(peer_ms), 2),
                 "ours_over_torch": round(statistics.median(
                     o / p for o, p in zip(ours_ms, peer_ms)), 3)})
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--stages", default=",".join(f"{s}:{c}" for s, c in STAGES),
                      help="size:channels,... of 3x3 stride-1 layers")
  parser.add_argument("--repeats", type=int, default=15, help="timed calls per operation")
  parser.add_argument("--rounds", type=int, default=3, help="ours-then-torch repetitions")
  parser.add_argument("--peer_python", default="/tmp/ssl-peer-venv/bin/python")
  parser.add_argument("--measure_ours", action="store_true",
                      help="(internal) time our layers in this process and print JSON lines")
  args = parser.parse_args(argv)
  if args.batch < 1 or args.repeats < 1 or args.rounds < 1:
    parser.error(f"--batch, --repeats and --rounds must be at least 1, got {args.batch}, "
                 f"{args.repeats}, {args.rounds}")
  try:
    stages = parse_stages(args.stages)
  except ValueError as error:
    parser.error(str(error))

  if args.measure_ours:
    from ssl_jax import cpu
    cpu.configure()   # the process settings main.py makes, before JAX's backends exist
    for size, channels in stages:
      for operation, ms in time_our_stage(args.batch, size, channels, args.repeats).items():
        print(json.dumps({"impl": "ssl_jax", "batch": args.batch, "size": size,
                          "channels": channels, "operation": operation,
                          "median_ms": round(ms, 3)}), flush=True)
    return

  if not os.path.exists(args.peer_python):
    parser.error(f"--peer_python {args.peer_python} does not exist; build it with "
                 f"`bash ../shared/bench/setup_peer.sh`")
  rounds = []
  for _ in range(args.rounds):
    ours = run_ours(args.batch, args.stages, args.repeats)
    # torch gets as many threads as the cores XLA's pool uses here (those this process may run on).
    peer = run_peer(args.peer_python, args.batch, args.stages, args.repeats,
                    len(os.sched_getaffinity(0)))
    for record in ours + peer:
      print(json.dumps(record), flush=True)
    rounds.append((ours, peer))
  rows = summarise(rounds)
  print(f"\n{'size x ch':12s}{'operation':26s} {'ours ms':>8} {'torch ms':>9} {'ours/torch':>10}")
  for row in rows:
    print(f"{row['size']:>4} x {row['channels']:<4} {row['operation']:26s} {row['ours_ms']:8.2f} "
          f"{row['torch_ms']:9.2f} {row['ours_over_torch']:10.3f}")
  for row in rows:
    print(json.dumps({"summary": True, "batch": args.batch, **row}))


if __name__ == "__main__":
  main()
