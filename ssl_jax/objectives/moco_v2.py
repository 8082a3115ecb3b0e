"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning").

The query encoder is the online network (backbone + 2-layer MLP projector without BN); the key
encoder is its EMA copy (the target). For a batch of two views, q = normalize(online(view1)),
k = normalize(target(view2)) with no gradient, and each query is classified against its own key
(the positive, logit 0) and a queue of K keys from earlier batches (the negatives) with a
temperature-scaled softmax (InfoNCE). After the optimiser step the keys of the whole global batch
replace the oldest queue entries (a ring buffer).

BatchNorm modes (`objective_config.bn_mode`), following the MoCo v1 paper and code:
- 'global': every BN normalises over the whole global batch (synchronised BN, free under jit).
- 'per_device': BN statistics per group of the batch (`GroupedBatchNorm`), as unsynchronised
  per-GPU BN in PyTorch DDP.
- 'shuffle': per-group BN in both encoders, and the key encoder's input is permuted randomly
  across the whole global batch before its forward and un-permuted after. A sample's query and
  key are then normalised with statistics of different sample subsets, so the model cannot cheat
  the pretext task through intra-batch BN communication (MoCo v1, section 3.3).
Groups: `objective_config.bn_groups` when > 0, else `num_batch_shards` (one group per device).

`objective_config.symmetric`: loss = 0.5 * (ctr(q1, k2) + ctr(q2, k1)). The official CIFAR demo
sums the two directions; averaging keeps the loss on the scale of the asymmetric one, so the same
learning rate applies to both settings (summing would double the gradient). Where the negatives
come from is `objective_config.symmetric_queues`:
- 'per_view' (default, "one queue per view" as asked of the symmetric variant): two queues of
  `queue_size` keys, 'queue' of earlier view-1 keys and 'queue_2' of earlier view-2 keys, sharing
  'queue_ptr'. The q1-vs-k2 direction, whose positive is a view-2 key, takes its negatives from
  the view-2 queue, and q2-vs-k1 from the view-1 queue, so positive and negatives of each
  direction come from the same augmentation stream.
- 'shared': one queue that receives both key sets (view 1's keys first) and serves both
  directions, as the symmetrised MoCo of the official CIFAR demo (colab/moco_cifar10_demo).
The asymmetric mode keeps exactly the state {'queue', 'queue_ptr'}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.models import COMPUTE_DTYPES, MLP, SSLNetwork, build_training_backbone
from ssl_jax.objectives.base import LossInputs, LossOutput, Objective, PyTree

BN_MODES = ("global", "per_device", "shuffle")
SYMMETRIC_QUEUES = ("per_view", "shared")


def contrastive_loss(queries: jax.Array, keys: jax.Array, queue: jax.Array,
                     temperature: float) -> tuple[jax.Array, jax.Array]:
  """MoCo's loss on projections: (InfoNCE mean over the batch, top-1 accuracy of the positive).

  `queries` and `keys` are raw (N, d) projections (normalised inside); `queue` is (K, d) unit-norm.
  """
  return losses.queue_info_nce(queries, keys, queue, temperature)


def symmetric_contrastive_loss(queries_1: jax.Array, queries_2: jax.Array, keys_1: jax.Array,
                               keys_2: jax.Array, queue: jax.Array, temperature: float,
                               queue_of_view_2_keys: jax.Array | None = None,
                               ) -> tuple[jax.Array, jax.Array]:
  """0.5 * (ctr(q1, k2) + ctr(q2, k1)); the accuracy is the mean of the two directions.

  With one queue per view, `queue` holds earlier view-1 keys (negatives of q2 vs k1) and
  `queue_of_view_2_keys` earlier view-2 keys (negatives of q1 vs k2); when it is None, `queue`
  serves both directions (the shared queue)."""
  if queue_of_view_2_keys is None:
    queue_of_view_2_keys = queue
  loss_12, accuracy_12 = contrastive_loss(queries_1, keys_2, queue_of_view_2_keys, temperature)
  loss_21, accuracy_21 = contrastive_loss(queries_2, keys_1, queue, temperature)
  return 0.5 * (loss_12 + loss_21), 0.5 * (accuracy_12 + accuracy_21)


def shuffle_permutation(rng: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """(permutation, inverse) of the global batch for shuffle-BN: x[perm][inverse] == x."""
  permutation = jax.random.permutation(rng, batch_size)
  return permutation, jnp.argsort(permutation)


def gather_rows(x: jax.Array, indices: jax.Array) -> jax.Array:
  """x[indices] along the batch axis, keeping x's sharding: under an explicitly sharded mesh the
  gather must be told its output sharding, and keeping the batch sharded over the data axis is
  what makes each device (BN group) see samples from other devices after the shuffle."""
  x = jnp.asarray(x)
  return x.at[indices].get(out_sharding=jax.typeof(x).sharding)


def enqueue(queue: jax.Array, queue_ptr: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Writes `keys` (n, d) into the ring buffer `queue` (K, d) at `queue_ptr`; K % n == 0.

  Because K is a multiple of n and the pointer only ever advances by n, a write never straddles
  the end of the queue, so one contiguous dynamic_update_slice suffices.
  """
  num_keys, queue_size = keys.shape[0], queue.shape[0]
  if queue_size % num_keys:
    raise ValueError(f"MoCo queue_size {queue_size} is not a multiple of the {num_keys} keys "
                     f"enqueued per step")
  queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype),
                                       (queue_ptr, jnp.zeros_like(queue_ptr)))
  return queue, (queue_ptr + num_keys) % queue_size


class MocoV2(Objective):
  """MoCo v2: EMA key encoder, queue of negatives, InfoNCE (see the module docstring)."""

  uses_target = True
  metric_names = ("contrastive_acc",)

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    objective_config = config.objective_config
    self.temperature = float(objective_config.temperature)
    self.queue_size = int(objective_config.queue_size)
    self.proj_dim = int(objective_config.proj_dim)
    self.symmetric = bool(objective_config.symmetric)
    # .get: configs written before the option existed keep working (with the default).
    self.symmetric_queues = objective_config.get("symmetric_queues", "per_view")
    if self.symmetric_queues not in SYMMETRIC_QUEUES:
      raise ValueError(f"unknown MoCo symmetric_queues {self.symmetric_queues!r}; allowed: "
                       f"{list(SYMMETRIC_QUEUES)}")
    self.queue_per_view = self.symmetric and self.symmetric_queues == "per_view"
    self.bn_mode = objective_config.bn_mode
    if self.bn_mode not in BN_MODES:
      raise ValueError(f"unknown MoCo bn_mode {self.bn_mode!r}; allowed: {list(BN_MODES)}")
    if self.bn_mode == "global":
      self.bn_groups = 1
    else:
      self.bn_groups = (int(objective_config.bn_groups) if objective_config.bn_groups > 0
                        else num_batch_shards)
    # The key encoder has exactly the query encoder's architecture, so one module serves both
    # (applied with the online or the target variables).
    self.network = SSLNetwork(
        backbone=build_training_backbone(config.model, bn_groups=self.bn_groups),
        projector=self.build_projector(objective_config, COMPUTE_DTYPES[config.model.dtype]),
    )

  def build_projector(self, objective_config: ml_collections.ConfigDict, dtype) -> MLP:
    """MoCo v2's head: Linear(D, proj_hidden_dim) -> ReLU -> Linear(-, proj_dim), no BN.
    (MoCo v1 overrides this with its single Linear.)"""
    return MLP(hidden_dims=(int(objective_config.proj_hidden_dim),), out_dim=self.proj_dim,
               hidden_bias=True, hidden_bn=False, out_bias=True, out_bn="none",
               bn_groups=self.bn_groups, dtype=dtype)

  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    # Eval mode: one dummy image creates every variable without BN's batch-size constraints.
    variables = self.network.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return variables["params"], variables["batch_stats"]

  def init_objective_state(self, rng: jax.Array, global_batch_size: int) -> PyTree:
    # Each step writes N keys into every queue: 2N into the shared queue of the symmetric mode.
    shared_symmetric = self.symmetric and not self.queue_per_view
    keys_per_step = global_batch_size * (2 if shared_symmetric else 1)
    if self.queue_size % keys_per_step:
      what = ("2 x global batch size (symmetric, shared queue)" if shared_symmetric
              else "global batch size")
      raise ValueError(f"MoCo queue_size {self.queue_size} is not a multiple of the {what} "
                       f"{keys_per_step}")
    if global_batch_size % self.bn_groups:
      raise ValueError(f"MoCo bn_mode {self.bn_mode!r}: global batch size {global_batch_size} is "
                       f"not divisible into {self.bn_groups} BatchNorm groups")
    # Random unit vectors, as the official code's normalised randn queue: until real keys replace
    # them they act as uninformative negatives.
    queue = losses.l2_normalize(jax.random.normal(rng, (self.queue_size, self.proj_dim)))
    state = {"queue": queue, "queue_ptr": jnp.zeros([], jnp.int32)}
    if self.queue_per_view:
      state["queue_2"] = losses.l2_normalize(
          jax.random.normal(jax.random.fold_in(rng, 2), (self.queue_size, self.proj_dim)))
    return state

  def key_forward(self, target_params: PyTree, target_batch_stats: PyTree, images: jax.Array,
                  rng: jax.Array) -> tuple[dict, PyTree]:
    """Key encoder forward (train-mode BN, updating its own statistics): all of the network's
    outputs ('projection', 'pooled', 'stages') in the input's sample order, without gradient.
    In 'shuffle' mode the batch is permuted with `shuffle_permutation(rng, N)` before the
    forward and every output is un-permuted after (outputs nobody reads cost nothing under jit)."""
    shuffle = self.bn_mode == "shuffle"
    if shuffle:
      permutation, inverse = shuffle_permutation(rng, images.shape[0])
      images = gather_rows(images, permutation)
    outputs, target_batch_stats = self.target_forward(target_params, target_batch_stats, images)
    if shuffle:
      outputs = jax.tree.map(lambda x: gather_rows(x, inverse), outputs)
    return jax.lax.stop_gradient(outputs), target_batch_stats

  def encode_keys(self, target_params: PyTree, target_batch_stats: PyTree, images: jax.Array,
                  rng: jax.Array) -> tuple[jax.Array, PyTree]:
    """Normalised keys of `key_forward`, in the input's sample order, without gradient."""
    outputs, target_batch_stats = self.key_forward(target_params, target_batch_stats, images, rng)
    return losses.l2_normalize(outputs["projection"]), target_batch_stats

  def _encode_queries(self, params: PyTree, batch_stats: PyTree,
                      images: jax.Array) -> tuple[jax.Array, PyTree]:
    outputs, batch_stats = self.train_forward(params, batch_stats, images)
    return outputs["projection"], batch_stats

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    views, params, target_params = inputs.views, inputs.params, inputs.target_params
    if len(views) < 2:
      raise ValueError(f"MoCo needs 2 views per image, got {len(views)}")
    view_1, view_2 = views[0], views[1]
    queue = inputs.objective_state["queue"]
    shuffle_rng_1, shuffle_rng_2 = jax.random.split(inputs.rng)

    queries_1, batch_stats = self._encode_queries(params, inputs.batch_stats, view_1)
    keys_2, target_batch_stats = self.encode_keys(target_params, inputs.target_batch_stats,
                                                  view_2, shuffle_rng_2)
    if self.symmetric:
      queries_2, batch_stats = self._encode_queries(params, batch_stats, view_2)
      keys_1, target_batch_stats = self.encode_keys(target_params, target_batch_stats, view_1,
                                                    shuffle_rng_1)
      if self.queue_per_view:
        loss, accuracy = symmetric_contrastive_loss(
            queries_1, queries_2, keys_1, keys_2, queue, self.temperature,
            queue_of_view_2_keys=inputs.objective_state["queue_2"])
        new_keys = {"keys": keys_1, "keys_2": keys_2}
      else:
        loss, accuracy = symmetric_contrastive_loss(queries_1, queries_2, keys_1, keys_2, queue,
                                                    self.temperature)
        new_keys = {"keys": jnp.concatenate([keys_1, keys_2], axis=0)}
    else:
      loss, accuracy = contrastive_loss(queries_1, keys_2, queue, self.temperature)
      new_keys = {"keys": keys_2}

    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats=target_batch_stats,
        projections=queries_1.astype(jnp.float32),
        extras=new_keys,
        metrics={"contrastive_acc": accuracy},
    )

  def update_objective_state(self, objective_state: PyTree, extras: dict[str, jax.Array]) -> PyTree:
    """Enqueues extras['keys'] (and, with one queue per view, extras['keys_2'] into 'queue_2' at
    the same pointer: both queues advance in step)."""
    queue, queue_ptr = enqueue(objective_state["queue"], objective_state["queue_ptr"],
                               extras["keys"])
    new_state = {"queue": queue, "queue_ptr": queue_ptr}
    if "queue_2" in objective_state:
      new_state["queue_2"], _ = enqueue(objective_state["queue_2"], objective_state["queue_ptr"],
                                        extras["keys_2"])
    return new_state
