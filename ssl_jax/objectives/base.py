"""The interface every SSL objective implements.

An objective owns its networks (online network, optional EMA target), its loss, and any state of its
own (the MoCo queue, DirectPred's correlation estimate). The engine in `ssl_jax/step.py` is written
only against this interface, so adding an objective means one file here plus one config, and one
line in the explicit `OBJECTIVES` dict of `ssl_jax/objectives/__init__.py`.

Conventions
- `params` / `batch_stats` are the online network's flax collections, with top-level keys
  `backbone`, `projector` and (where there is one) `predictor`.
- The EMA target holds only the keys named in `target_keys` (never the predictor), and keeps its
  own BatchNorm statistics, updated by its own forward passes, not by EMA.
- `loss` reads what it needs from one `LossInputs`; an objective without a target or a state of
  its own simply never looks at those fields.
- Everything here is pure and traced inside the one jitted train step.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import flax.struct
import jax
import ml_collections

PyTree = Any


@flax.struct.dataclass
class LossInputs:
  """Everything `Objective.loss` may read, built inside the train step for each step.

  One structure rather than eight positional arguments, so that an objective names only the
  fields it uses and a new field reaches every objective without touching their signatures. The
  fields without a default are what every objective is given; the defaults are what the step
  holds for an objective without an EMA target or a state of its own."""

  params: PyTree               # online params: what the loss is differentiated with respect to
  batch_stats: PyTree          # online BN statistics before this step's forward passes
  views: tuple[jax.Array, ...]   # float32 (N, H, W, C) each, already augmented and normalised
  rng: jax.Array               # this step's key for the objective's own draws (e.g. shuffle-BN)
  step: jax.Array              # int32 count of steps taken before this one (for schedules)
  target_params: PyTree = flax.struct.field(default_factory=dict)        # EMA target's params
  target_batch_stats: PyTree = flax.struct.field(default_factory=dict)   # and its BN statistics
  objective_state: PyTree = flax.struct.field(default_factory=dict)      # e.g. the MoCo queue
  # The images' labels, (N,) class indices or (N, K) 0/1: self-supervised objectives never read
  # them; the supervised baseline does.
  labels: jax.Array | None = None


class LossOutput(NamedTuple):
  """What `Objective.loss` returns next to the scalar loss (the `has_aux` part)."""

  batch_stats: PyTree          # online BN statistics after this step's forward passes
  target_batch_stats: PyTree   # target BN statistics after its forward passes ({} without target)
  projections: jax.Array       # (N, d) online projections of the first view: collapse monitors
  extras: dict[str, jax.Array]   # values `update_objective_state` needs (e.g. MoCo's 'keys')
  metrics: dict[str, jax.Array]  # extra scalar metrics to log (e.g. 'contrastive_acc')


class Objective(abc.ABC):
  """Base class: subclasses set `uses_target` and implement the abstract methods."""

  # True when the train state carries an EMA target network (MoCo key encoder, BYOL target).
  uses_target: ClassVar[bool] = False
  # Top-level parameter groups copied into (and EMA-updated in) the target network.
  target_keys: ClassVar[tuple[str, ...]] = ("backbone", "projector")
  # Names of the scalars `loss` puts in `LossOutput.metrics` (the metrics collection is built
  # from them before tracing).
  metric_names: ClassVar[tuple[str, ...]] = ()

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    """`config` is the whole experiment config (read-only here); `num_batch_shards` is how many
    device groups the global batch is split over (used by per-device / shuffle BatchNorm)."""
    self.config = config
    self.num_batch_shards = num_batch_shards

  @abc.abstractmethod
  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    """Returns the online network's (params, batch_stats) for images of shape (H, W, C)."""

  def init_objective_state(self, rng: jax.Array, global_batch_size: int) -> PyTree:
    """State of the objective itself (e.g. the MoCo queue); `{}` when there is none."""
    del rng, global_batch_size
    return {}

  @abc.abstractmethod
  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    """Scalar loss (differentiated w.r.t. `inputs.params`) and the auxiliary outputs."""

  def train_forward(self, params: PyTree, batch_stats: PyTree, images: jax.Array,
                    **kwargs) -> tuple[dict[str, jax.Array], PyTree]:
    """`self.network` in training mode (BatchNorm on the batch's statistics): its outputs and
    the BN statistics that forward leaves behind. `kwargs` go to the network's call (e.g.
    `use_predictor=False` for a target without predictor)."""
    outputs, mutated = self.network.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"], **kwargs)
    return outputs, mutated["batch_stats"]

  def target_forward(self, target_params: PyTree, target_batch_stats: PyTree, images: jax.Array,
                     **kwargs) -> tuple[dict[str, jax.Array], PyTree]:
    """`train_forward` of the target network, under its own name in profiles."""
    with jax.named_scope("target_forward"):
      return self.train_forward(target_params, target_batch_stats, images, **kwargs)

  def update_objective_state(self, objective_state: PyTree, extras: dict[str, jax.Array]) -> PyTree:
    """Post-update hook, run after the optimiser step (e.g. enqueue MoCo keys)."""
    del extras
    return objective_state

  def after_update(self, params: PyTree) -> PyTree:
    """Post-optimiser hook on the online params (e.g. symmetrising a linear predictor); runs
    inside the step before the EMA update. Identity by default."""
    return params

  def param_labels(self, params: PyTree) -> PyTree:
    """Optimiser group of each parameter leaf, one of `ssl_jax.optim.PARAM_GROUPS`: 'predictor'
    for the predictor head (its learning rate and weight decay can be set apart,
    `config.optim.predictor_*`), 'default' otherwise."""
    return {group: jax.tree.map(lambda _, group=group: ("predictor" if group == "predictor"
                                                        else "default"), subtree)
            for group, subtree in params.items()}

  def analysis(self, params: PyTree, objective_state: PyTree) -> dict[str, Any]:
    """Host-side analysis record (numpy in, JSON-able values out), written every
    `config.analysis_every_steps` steps to WORKDIR/analysis.jsonl; `{}` when there is none
    (e.g. the predictor eigenspace tracking of the non-contrastive objectives)."""
    del params, objective_state
    return {}

  def encoder_variables(self, params: PyTree, batch_stats: PyTree) -> dict[str, PyTree]:
    """The backbone's variables, as exported for evaluation."""
    return {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}
