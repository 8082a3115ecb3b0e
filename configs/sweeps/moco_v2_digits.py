r"""A sweep file for MoCo v2 on digits: learning rate x weight decay, plus temperature runs.

`get_sweep(arg)` returns the runs as a list of override dicts ({dotted config key: value}); the
sweep runner checks every key and value against the config before anything starts. Runs need not
form a grid: the temperature runs below each set their own learning rate.

  python main.py --mode=sweep --config=configs/moco_v2.py:digits \
      --sweep_file=configs/sweeps/moco_v2_digits.py --workdir=runs/moco_v2_digits_sweep
  python main.py --mode=sweep --config=configs/moco_v2.py:digits \
      --sweep_file=configs/sweeps/moco_v2_digits.py:lr --workdir=runs/moco_v2_digits_lr
"""

from __future__ import annotations

from ssl_jax.sweeps import product

LEARNING_RATES = (3e-4, 1e-3, 3e-3)   # around the digits preset's AdamW 1e-3


def get_sweep(arg: str | None = None) -> list[dict]:
  if arg == "lr":
    return product({"optim.base_lr": LEARNING_RATES})
  if arg is not None:
    raise ValueError(f"unknown sweep arg {arg!r}; use none (the full sweep) or 'lr'")
  grid = product({"optim.base_lr": LEARNING_RATES, "optim.weight_decay": (1e-4, 1e-2)})
  temperatures = [{"objective_config.temperature": 0.2, "optim.base_lr": 3e-3},
                  {"objective_config.temperature": 0.05, "optim.base_lr": 3e-4}]
  return grid + temperatures
