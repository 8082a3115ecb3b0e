"""Several processes, one program: `jax.distributed` start-up and the few cross-process helpers.

ssl-jax runs multi-host on JAX's own runtime: every process runs the same `main.py`, owns its
local devices, reads its own part of each batch, and the jitted step's collectives (XLA over
NCCL on GPUs, ICI on TPUs, gloo on CPUs) do the rest. Nothing here moves training data.

`initialize` is called once by `main.py` before any device is touched. A process joins a job

* explicitly: `--coordinator_address=host:port --num_processes=N --process_id=i`, or
* from the cluster's environment, where `jax.distributed.initialize()` finds all three values
  itself: SLURM (`srun` with several tasks) and Open MPI (`mpirun`) are recognised here; Cloud
  TPU VM pod slices and Kubernetes, which describe themselves through a metadata server, need
  `--distributed` to ask for it.

Otherwise it stays a single process and nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
# The coordination-service client (barriers, key-value store) has no public accessor; orbax and
# jax's own multihost_utils reach it the same way.
from jax._src import distributed as jax_distributed_state
from jax.experimental import multihost_utils

# Generous: processes may wait for each other's compilation (minutes for a ResNet-50 on a busy host).
BARRIER_TIMEOUT_SECONDS = 1800

# Environment variables that say "this process is one task of several" for the cluster types
# jax.distributed.initialize() can read on its own. A single SLURM or MPI task is not a job of
# several processes, so counts of 1 do not count.
_CLUSTER_PROCESS_COUNTS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
_CLUSTER_MARKERS = ("JAX_COORDINATOR_ADDRESS",)


def cluster_environment_detected(environ: dict[str, str] | None = None) -> bool:
  """True when the environment describes a launch of several processes (SLURM, Open MPI, or an
  explicit JAX_COORDINATOR_ADDRESS), which `jax.distributed.initialize()` can join unaided."""
  environ = os.environ if environ is None else environ
  for name in _CLUSTER_PROCESS_COUNTS:
    value = environ.get(name, "")
    if value.isdigit() and int(value) > 1:
      return True
  return any(environ.get(name) for name in _CLUSTER_MARKERS)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, from_environment: bool = False) -> bool:
  """Joins a multi-process job if one is described (flags first, then the environment).

  `from_environment` joins through JAX's own cluster detection even when the environment
  variables checked here are absent (Cloud TPU pod slices, Kubernetes).

  Returns True if this process is now one of several. Must run before JAX creates a backend.
  Raises ValueError naming the missing flags when only some of the three are given.
  """
  explicit = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
              "--process_id": process_id}
  given = [name for name, value in explicit.items() if value is not None]
  if given and len(given) != len(explicit):
    missing = [name for name in explicit if name not in given]
    raise ValueError(f"{', '.join(given)} given without {', '.join(missing)}: a multi-process "
                     "launch needs all three (or none, to read them from SLURM/MPI/TPU)")
  if given and num_processes == 1:
    return False
  if given and not 0 <= process_id < num_processes:
    raise ValueError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
  if not given and not from_environment and not cluster_environment_detected():
    return False
  # CPU devices need a collectives library for cross-process all-reduces; gloo ships with
  # jaxlib. The setting only concerns the CPU backend, so it is harmless on GPU and TPU hosts.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  # Not jax.process_count(): that would create the backends, which the caller may still have
  # settings for (ssl_jax.cpu.configure).
  return jax_distributed_state.global_state.num_processes > 1


def is_lead_process() -> bool:
  """Process 0 writes logs, summaries and exports; the others compute alongside it."""
  return jax.process_index() == 0


def to_host(tree: Any) -> Any:
  """Every leaf as a whole NumPy array on every process.

  Arrays this process holds entirely (all single-process arrays, and replicated ones) are simply
  fetched; arrays split over other processes' devices (batch-sharded features, FSDP-sharded
  params) are gathered from all processes first, which is collective: every process must call.
  """

  def fetch(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable \
        and not leaf.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))

  return jax.tree.map(fetch, tree)


def config_fingerprint(config: ml_collections.ConfigDict) -> str:
  """A short hash of the whole config, equal across processes launched with the same flags."""
  text = json.dumps(config.to_dict(), sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def tree_checksum(tree: Any) -> str:
  """A short hash of the bytes of every leaf (as this process holds it, gathered if split)."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(to_host(tree)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()[:16]


_barrier_counts: dict[str, int] = {}


def wait_for_all_processes(name: str) -> None:
  """Blocks until every process has reached the barrier `name` (no-op with one process).

  Goes through the coordination service, not a device collective: collectives set up their
  transport on first use with a short timeout (30 s for gloo on CPUs), so processes should enter
  a new program's first collective together, e.g. after each has compiled it."""
  if jax.process_count() == 1:
    return
  # A barrier id is used once: the n-th passage of `name` gets its own.
  count = _barrier_counts[name] = _barrier_counts.get(name, 0) + 1
  jax_distributed_state.global_state.client.wait_at_barrier(f"ssl_jax/{name}/{count}",
                                                            BARRIER_TIMEOUT_SECONDS * 1000)


def assert_same_config_everywhere(config: ml_collections.ConfigDict) -> None:
  """Fails fast when the processes of one job were launched with different configs (a typo in
  one host's overrides would otherwise train silently wrong or deadlock in a collective)."""
  if jax.process_count() == 1:
    return
  client = jax_distributed_state.global_state.client
  client.key_value_set(f"ssl_jax/config/{jax.process_index()}", config_fingerprint(config))
  fingerprints = [client.blocking_key_value_get(f"ssl_jax/config/{index}",
                                                BARRIER_TIMEOUT_SECONDS * 1000)
                  for index in range(jax.process_count())]
  differing = [index for index, value in enumerate(fingerprints) if value != fingerprints[0]]
  if differing:
    raise ValueError(f"processes {differing} were launched with a config different from process "
                     "0's; every process must get the same --config and overrides")
