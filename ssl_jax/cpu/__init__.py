"""Opt-in speed for training on CPU hosts; nothing here runs unless the application asks.

- `configure()` (`process_settings`): process-wide settings, the XLA:CPU flag that keeps
  convolutions out of YNNPACK, malloc settings that let each step reuse its temporaries, and
  CPU computations run inline. `main.py` and the benchmarks call it at start-up.
- `convolution.conv_general_dilated`: a drop-in for the backbones' `nn.Conv` with the same
  values and a faster weight gradient on CPU (`weight_grad_kernel`, a C++ kernel built on first
  use). Training uses it when `config.model.conv_impl` says so (`ssl_jax.models.build_backbone`
  resolves the name); the models never import this package, and evaluation never uses it.
"""

from __future__ import annotations

from ssl_jax.cpu.process_settings import configure

__all__ = ["configure"]
