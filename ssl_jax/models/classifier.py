"""A backbone with a linear classifier on its pooled features (supervised training, fine-tuning)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype


class Classifier(nn.Module):
  """backbone -> 'head' (Dense to `num_classes`); returns {'pooled', 'logits' (float32)}.

  The backbone's variables sit under 'backbone', as in `SSLNetwork`, so the same encoder export
  serves both."""

  backbone: nn.Module
  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    pooled = self.backbone(x, train=train)["pooled"]
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(pooled)
    return {"pooled": pooled, "logits": logits.astype(jnp.float32)}
