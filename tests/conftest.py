"""Test-wide setup: 8 forced CPU devices, set before jax is imported anywhere."""

import os
import tempfile


def _pin_this_worker_to_its_share_of_cores() -> None:
  """Under `pytest -n N`, worker i runs on the cores i, i+N, ... only (subprocesses it starts
  inherit that). Unpinned, each worker's XLA sizes its thread pools for every core, so two
  workers on 2 cores keep four busy threads and preempt each other mid-kernel: two tiny jobs run
  side by side took 7-17 % longer unpinned than pinned to one core each (measured)."""
  worker = os.environ.get("PYTEST_XDIST_WORKER")          # 'gw0', 'gw1', ...
  count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
  cores = sorted(os.sched_getaffinity(0))
  if worker is None or count < 2 or len(cores) < count:
    return
  os.sched_setaffinity(0, cores[int(worker.removeprefix("gw")) % count::count])


# Before jax is imported: XLA sizes its thread pools by the cores it may run on.
_pin_this_worker_to_its_share_of_cores()
# Compiling is most of this suite, so every program compiles with LLVM at -O1 and XLA:CPU's older
# (non-MLIR) fusion emitters: a tiny job pinned to one core compiled in 16.9 s instead of 27.1
# and stepped at 660 instead of 720 images/s, 49.6 instead of 56.1 s in all (measured; the tests
# check what is computed, not how fast). `config.quick_compile` goes further for the few-step runs.
SESSION_COMPILE_FLAGS = "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), SESSION_COMPILE_FLAGS,
                                    "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests build the same small step (resume runs a config three times): a compilation cache
# for this session compiles each program once. It is fresh per session, so nothing stale leaks in.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="ssl_jax_test_xla_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Only now: jax reads the settings above when it is imported. The session runs with the process
# settings main.py makes (the XLA:CPU flags, malloc, inline dispatch); `configure` creates the
# CPU backend with them, before any test module can.
import flax.linen  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

from ssl_jax import cpu  # noqa: E402

cpu.configure()


def pytest_collection_modifyitems(config, items):
  """Runs the `xdist_group` tests first: each group shares one expensive run (a tiny job, the
  two-process run), and under `--dist loadgroup` a group is one unit of work that one worker
  takes whole. Started first, the longest units overlap with everything else instead of leaving
  one worker busy at the end while the other idles."""
  items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)


@pytest.fixture
def smooth_activations(monkeypatch):
  """Traces the models with GELU where they apply ReLU, for tests that compare two layouts or
  compilations of the same training over several steps.

  Those agree only to rounding (~1e-7 a step), and ReLU's kink turns a last-bit difference in a
  pre-activation near zero into a discrete difference in the gradient: MoCo v2's 8-vs-1-device
  params went from 1.2e-7 to 2.2e-5 in one step (step 8) and to 5e-3 by step 20, and which steps
  cross a kink depends on the CPU's kernels (on an AVX-512 Xeon, 6 of 11 objectives crossed one
  in 20 steps at rates that crossed none on an AMD EPYC). With GELU, at one rate (0.05) for all,
  every objective's params stayed within 1e-6 and its BN statistics within 5e-6 over 20 steps
  (measured; DirectPred and DirectCopy with LARS). The sharding, all-reduces and state updates
  under test are the same; ReLU itself is exercised everywhere else."""
  monkeypatch.setattr(flax.linen, "relu", jax.nn.gelu)


@pytest.fixture
def one_device_process(monkeypatch):
  """`jax.device_count()` is 1, as in a one-device process (the backward of ssl_jax.cpu's
  convolution asks). Traces of that backward are cached across jits, so the caches are cleared on
  the way in and out: no other test sees them."""
  monkeypatch.setattr(jax, "device_count", lambda backend=None: 1)
  jax.clear_caches()
  yield
  jax.clear_caches()
