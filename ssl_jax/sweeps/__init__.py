"""Hyperparameter sweeps by config overrides: definition (sweep file or --sweep products), a
local runner (one main.py process per run), a SLURM array script, and a summary table.

  python main.py --mode=sweep --config=configs/moco_v2.py:digits \
      --sweep=optim.base_lr=3e-4,1e-3,3e-3 --workdir=runs/lr_sweep
  python main.py --mode=sweep_summary --workdir=runs/lr_sweep
"""

from ssl_jax.sweeps.command import print_summary, run_sweep
from ssl_jax.sweeps.definition import Run, SweepError, build_runs, product, run_name

__all__ = ["Run", "SweepError", "build_runs", "print_summary", "product", "run_name",
           "run_sweep"]
