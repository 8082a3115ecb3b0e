r"""Per-device bytes of the model-sized train state under FSDP, from shapes alone.

  python benchmarks/fsdp_memory.py
  python benchmarks/fsdp_memory.py --objectives=moco_v2,byol --models=resnet50:64,resnet200:128 \
      --fsdp=1,2,4,8 --devices=8

For each objective's ImageNet config, backbone (name:width; width 128 = "2x") and `mesh.fsdp`,
prints one JSON line with the bytes one device holds of params, EMA target params and optimiser
state (and of the whole state, objective state such as the MoCo queue included), as laid out by
`sharding.state_shardings` over a (devices / fsdp, fsdp) mesh. Nothing is materialised: the state
comes from `jax.eval_shape`, so a ResNet-200 x2 costs no memory, and CPU devices stand in for
accelerators (the layout does not depend on the platform). The data source is swapped for the
synthetic one of ImageNet's size, which changes no state shape. Activations and XLA's temporaries
are not counted: they are split over the batch, not by FSDP.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)


def _force_cpu_devices(count: int) -> None:
  # Before jax is imported: the layout is computed over `count` stand-in devices.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={count}").strip()
  os.environ["JAX_PLATFORMS"] = "cpu"


MODEL_SIZED_FIELDS = ("params", "target_params", "opt_state")


def measure(objective: str, model: str, width: int, fsdp: int) -> dict:
  import jax

  from ssl_jax import sharding as sharding_lib
  from ssl_jax import train

  config = importlib.import_module(f"configs.{objective}").get_config("imagenet")
  config.data.source = "synthetic"   # ImageNet's size and shapes without its files
  config.model.name = model
  config.model.width = width
  config.mesh.fsdp = fsdp
  experiment = train.Experiment(config)
  abstract_state = experiment.abstract_state
  shardings = sharding_lib.state_shardings(abstract_state, experiment.mesh,
                                           config.mesh.fsdp_min_size)

  def per_device(field: str) -> int:
    tree, tree_shardings = getattr(abstract_state, field), getattr(shardings, field)
    totals = sharding_lib.bytes_per_device(tree, tree_shardings)
    # Every device holds the same share: FSDP splits evenly and replicates the rest.
    assert len(set(totals.values())) <= 1, totals
    return next(iter(totals.values()), 0)

  fields = {field: per_device(field) for field in
            ("params", "target_params", "opt_state", "batch_stats", "objective_state")}
  params = jax.tree.leaves(abstract_state.params)
  sharded = [leaf for leaf, sharding in zip(params, jax.tree.leaves(shardings.params))
             if any(axis is not None for axis in sharding.spec)]
  model_sized = sum(fields[field] for field in MODEL_SIZED_FIELDS)
  return dict(
      objective=objective, model=model, width=width, devices=jax.device_count(),
      mesh=dict(experiment.mesh.shape), fsdp_min_size=config.mesh.fsdp_min_size,
      optimizer=config.optim.name,
      num_params=sum(leaf.size for leaf in params),
      sharded_param_fraction=round(sum(leaf.size for leaf in sharded)
                                   / sum(leaf.size for leaf in params), 5),
      bytes_per_device=fields,
      model_sized_bytes_per_device=model_sized,
      model_sized_mib_per_device=round(model_sized / 2**20, 1),
      state_mib_per_device=round(sum(fields.values()) / 2**20, 1))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--objectives", default="moco_v2,byol")
  parser.add_argument("--models", default="resnet50:64,resnet200:128",
                      help="comma-separated name:width (width 128 = 2x)")
  parser.add_argument("--fsdp", default="1,2,4,8", help="comma-separated mesh.fsdp values")
  parser.add_argument("--devices", type=int, default=8)
  args = parser.parse_args(argv)
  _force_cpu_devices(args.devices)
  for objective in args.objectives.split(","):
    for model_and_width in args.models.split(","):
      model, width = model_and_width.split(":")
      for fsdp in args.fsdp.split(","):
        print(json.dumps(measure(objective, model, int(width), int(fsdp))), flush=True)


if __name__ == "__main__":
  main()
