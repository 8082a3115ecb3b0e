"""DirectPred (Tian, Chen & Ganguli, ICML 2021, "Understanding self-supervised learning dynamics
without contrastive pairs").

BYOL's networks (ssl_jax/objectives/byol.py: backbone, projector MLP, EMA target with its own BN
statistics, the loss 2 - 2 cos summed over both directions), but the predictor is a linear map
p = W f without bias whose weights are *set*, not learned. W and the correlation estimate F of its
inputs live in the objective state (not in params: the optimiser never sees them, so the engine's
predictor lr / weight decay options do not apply); ssl_jax/objectives/predictor_from_correlation.py
has the maths:
  F <- rho F + (1 - rho) E[f f^T]   over the detached online projections of both views (eq. 19,
                                    rho = 0.3; the first update takes the batch estimate);
  every `freq` steps: F = Q diag(s) Q^T, s <- max(s, 0) / max(s), p = sqrt(s) + eps (eq. 18,
  eps = 0.01; `eps_inside`: sqrt(s + eps)), p >= 1e-4, W = Q diag(p) Q^T.

Order within a step, as the official trainer (luckmatters ssl/real-dataset/byol_trainer.py):
the step's batch is folded into F before the loss, but the predictions use the W of the state,
i.e. the W set at the end of the previous update step; the new W (from the F that includes this
batch) is set after the optimiser step (`regulate_predictor` runs after `optimizer.step()`, when
`niter % freq == 0`, niter counting from 0). So the first step predicts with the initial W, drawn
like the official `nn.Linear` predictor's initial weights (uniform +-1/sqrt(d)), and every W
set afterwards is symmetric PSD. Here `loss` computes the new F and W and hands them through
`LossOutput.extras`; `update_objective_state` stores them, so a step the engine rejects as
non-finite leaves F and W as they were. One departure: between two settings (freq > 1) the
official code also trains the predictor by SGD; here W stays as set (DirectPred without gradient
training of the predictor at all, as the paper describes it).

Eigenspace tracking (`config.analysis_every_steps`) records W against F (ssl_jax/eigenspace.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import eigenspace
from ssl_jax.objectives import predictor_from_correlation as correlation_lib
from ssl_jax.objectives.base import LossInputs, LossOutput, PyTree
from ssl_jax.objectives.byol import Byol, byol_loss


class DirectPred(Byol):
  """BYOL with the linear predictor set from the correlation of its inputs (module docstring)."""

  uses_target = True

  def _build_predictor(self, objective_config: ml_collections.ConfigDict) -> None:
    self.correlation_rho = float(objective_config.correlation_rho)
    if not 0.0 <= self.correlation_rho < 1.0:
      raise ValueError(f"{type(self).__name__} correlation_rho must be in [0, 1), got "
                       f"{self.correlation_rho}")
    self.freq = int(objective_config.freq)
    if self.freq < 1:
      raise ValueError(f"{type(self).__name__} freq (steps between predictor settings) must be "
                       f">= 1, got {self.freq}")
    self.eps = float(objective_config.eps)
    self._read_weight_rule_options(objective_config)
    return None   # no learned predictor: the network is backbone + projector

  def _read_weight_rule_options(self, objective_config: ml_collections.ConfigDict) -> None:
    """Options of the F -> W rule (DirectCopy overrides this with its own)."""
    self.eps_inside = bool(objective_config.eps_inside)

  def predictor_weights(self, correlation: jax.Array) -> jax.Array:
    """W from F (DirectCopy overrides this)."""
    return correlation_lib.directpred_weights(correlation, self.eps, self.eps_inside)

  def init_objective_state(self, rng: jax.Array, global_batch_size: int) -> PyTree:
    del global_batch_size
    # The official predictor is an nn.Linear(d, d, bias=False): its default initialisation draws
    # weights uniformly in +-1/sqrt(fan_in). It is used for the first step only.
    bound = 1.0 / math.sqrt(self.proj_dim)
    initial_weights = jax.random.uniform(rng, (self.proj_dim, self.proj_dim), jnp.float32,
                                         minval=-bound, maxval=bound)
    return {"correlation": jnp.zeros((self.proj_dim, self.proj_dim), jnp.float32),
            "predictor_weights": initial_weights}

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    (online_1, online_2), (target_1, target_2), batch_stats, target_batch_stats = (
        self.forward_views(inputs.params, inputs.batch_stats, inputs.target_params,
                           inputs.target_batch_stats, inputs.views))
    projection_1, projection_2 = online_1["projection"], online_2["projection"]
    weights = inputs.objective_state["predictor_weights"]
    loss = byol_loss(correlation_lib.predict(projection_1, weights),
                     correlation_lib.predict(projection_2, weights),
                     target_1["projection"], target_2["projection"])

    correlation = correlation_lib.update_correlation(
        inputs.objective_state["correlation"],
        correlation_lib.batch_correlation((projection_1, projection_2)), self.correlation_rho)
    # lax.cond: the eigendecomposition runs only on the steps that set W.
    new_weights = jax.lax.cond(inputs.step % self.freq == 0, self.predictor_weights,
                               lambda _: weights, correlation)
    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats=target_batch_stats,
        projections=projection_1.astype(jnp.float32),
        extras={"correlation": correlation, "predictor_weights": new_weights},
        metrics={},
    )

  def update_objective_state(self, objective_state: PyTree,
                             extras: dict[str, jax.Array]) -> PyTree:
    del objective_state
    return {"correlation": extras["correlation"],
            "predictor_weights": extras["predictor_weights"]}

  def after_update(self, params: PyTree) -> PyTree:
    return params

  def analysis(self, params: PyTree, objective_state: PyTree) -> dict:
    del params
    return eigenspace.eigenspace_record(objective_state["predictor_weights"],
                                        objective_state["correlation"])
