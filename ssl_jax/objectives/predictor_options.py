"""Predictor options from the study of non-contrastive dynamics, shared by BYOL and SimSiam.

Tian, Chen & Ganguli (ICML 2021, "Understanding self-supervised learning dynamics without
contrastive pairs") probe BYOL and SimSiam with:
- a one-layer linear predictor (`objective_config.predictor = 'linear'`): Dense(d, d) without bias,
  torch nn.Linear initialisation, instead of the papers' MLP ('mlp', the default);
- symmetry regularisation (`objective_config.symmetric_predictor = True`): after every optimiser
  update W <- (W + W^T) / 2 (the official code's `predictor_reg = 'symmetric'`); only defined for
  the linear predictor;
- eigenspace tracking (`config.analysis_every_steps > 0`): W against the correlation F of its
  inputs (ssl_jax/eigenspace.py). Needs the linear predictor (its W is the Dense kernel,
  transposed to act as p = W f) and an estimate of F in the objective state.
EMA on/off (`config.ema.enabled`) and a separate predictor learning rate and weight decay
(`config.optim.predictor_lr_multiplier`, `predictor_weight_decay`, `predictor_schedule`, applied
to the 'predictor' parameter group of `Objective.param_labels`) live in the engine.

F is tracked exactly as DirectPred's (ssl_jax/objectives/predictor_from_correlation.py, rate
`objective_config.correlation_rho`, default 0.3), over the detached online projections of both
views. It is kept whenever the predictor is linear, so the state of a linear-predictor run does not
depend on `analysis_every_steps` (a checkpoint resumes with tracking switched on or off), and never
with the MLP predictor, whose state stays exactly as before.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import eigenspace
from ssl_jax.models import MLP
from ssl_jax.objectives import predictor_from_correlation as correlation_lib
from ssl_jax.objectives.base import PyTree

PREDICTORS = ("mlp", "linear")
DEFAULT_CORRELATION_RHO = 0.3   # Tian et al. eq. 19 (the official `dyn_lambda`)


class PredictorOptions:
  """The predictor choices of one BYOL / SimSiam config, validated, with the pieces they add."""

  def __init__(self, config: ml_collections.ConfigDict, objective_name: str):
    objective_config = config.objective_config
    # .get: configs written before these options existed keep their behaviour.
    self.kind = objective_config.get("predictor", "mlp")
    if self.kind not in PREDICTORS:
      raise ValueError(f"unknown {objective_name} predictor {self.kind!r}; allowed: "
                       f"{list(PREDICTORS)}")
    self.symmetric = bool(objective_config.get("symmetric_predictor", False))
    if self.symmetric and self.kind != "linear":
      raise ValueError(f"{objective_name} symmetric_predictor=True symmetrises a square linear "
                       f"predictor: set objective_config.predictor='linear' (got {self.kind!r})")
    if int(config.get("analysis_every_steps", 0)) > 0 and self.kind != "linear":
      raise ValueError(f"eigenspace tracking (analysis_every_steps > 0) reads the predictor as a "
                       f"d x d matrix W: {objective_name} needs objective_config.predictor="
                       f"'linear' (got {self.kind!r}), or set analysis_every_steps=0")
    self.correlation_rho = float(objective_config.get("correlation_rho",
                                                      DEFAULT_CORRELATION_RHO))
    if not 0.0 <= self.correlation_rho < 1.0:
      raise ValueError(f"objective_config.correlation_rho must be in [0, 1), got "
                       f"{self.correlation_rho}")
    self.tracks_correlation = self.kind == "linear"
    self.proj_dim = int(objective_config.proj_dim)

  def head(self, mlp: MLP) -> MLP:
    """The predictor module: `mlp` (the paper's) or the bias-free square linear layer."""
    if self.kind == "mlp":
      return mlp
    return MLP(hidden_dims=(), out_dim=self.proj_dim, out_bias=False, out_bn="none",
               dtype=mlp.dtype)

  def init_state(self) -> PyTree:
    if not self.tracks_correlation:
      return {}
    return {"correlation": jnp.zeros((self.proj_dim, self.proj_dim), jnp.float32)}

  def loss_extras(self, objective_state: PyTree,
                  projections: tuple[jax.Array, ...]) -> dict[str, jax.Array]:
    """The new F from this step's online projections (stored by `update_state`)."""
    if not self.tracks_correlation:
      return {}
    batch = correlation_lib.batch_correlation(projections)
    return {"correlation": correlation_lib.update_correlation(
        objective_state["correlation"], batch, self.correlation_rho)}

  def update_state(self, objective_state: PyTree, extras: dict[str, jax.Array]) -> PyTree:
    if not self.tracks_correlation:
      return objective_state
    return {**objective_state, "correlation": extras["correlation"]}

  def symmetrize(self, params: PyTree) -> PyTree:
    """W <- (W + W^T) / 2 on the linear predictor's kernel when the regulariser is on."""
    if not self.symmetric:
      return params
    kernel = params["predictor"]["output_dense"]["kernel"]
    predictor = {**params["predictor"],
                 "output_dense": {**params["predictor"]["output_dense"],
                                  "kernel": 0.5 * (kernel + kernel.T)}}
    return {**params, "predictor": predictor}

  def analysis(self, params: PyTree, objective_state: PyTree) -> dict[str, Any]:
    if not self.tracks_correlation:
      return {}
    # A flax Dense computes f @ kernel, i.e. p = kernel^T f: W is the transposed kernel.
    weights = np.asarray(params["predictor"]["output_dense"]["kernel"]).T
    return eigenspace.eigenspace_record(weights, np.asarray(objective_state["correlation"]))
