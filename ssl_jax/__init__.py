"""ssl-jax: self-supervised learning of image encoders in JAX/Flax.

The public entry points are `train_and_evaluate(config, workdir)` (ssl_jax.train) and
`load_encoder(path)`, which returns a callable from images to pooled and per-stage features.
Importing the library changes nothing in the process; the CPU settings that make training fast
there are the application's choice (`ssl_jax.cpu.configure()`).
"""

from __future__ import annotations


def load_encoder(path: str):
  """Loads an exported encoder directory; see `ssl_jax.export.load_encoder`."""
  # Imported on use so `import ssl_jax` stays light (no orbax/flax import cost for config tools).
  from ssl_jax.export import load_encoder as _load_encoder
  return _load_encoder(path)


__all__ = ["load_encoder"]
