"""ssl-jax: self-supervised learning of image encoders in JAX/Flax.

The public entry points are `train_and_evaluate(config, workdir)` (ssl_jax.train) and
`load_encoder(path)`, which returns a callable from images to pooled and per-stage features.
"""

from __future__ import annotations

from ssl_jax import host_memory, xla_cpu_flags

# Before any JAX backend exists: convolutions' weight gradients out of YNNPACK, and each step's
# temporaries reused instead of mapped afresh (see the modules).
xla_cpu_flags.apply()
host_memory.apply()


def load_encoder(path: str):
  """Loads an exported encoder directory; see `ssl_jax.export.load_encoder`."""
  # Imported on use so `import ssl_jax` stays light (no orbax/flax import cost for config tools).
  from ssl_jax.export import load_encoder as _load_encoder
  return _load_encoder(path)


__all__ = ["load_encoder"]
