"""The wheel `pip wheel .` builds: every module and config of the clone, the files read at run
time (the CPU kernel's source, py.typed), the license, and a base install without TensorFlow."""

import glob
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One worker for the module, so one build: `pip wheel` builds in the clone's own build/
# directory, where two xdist workers building at once can collide (a full run's build failed
# once with this module split over both workers).
pytestmark = pytest.mark.xdist_group("wheel_build")


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory):
  """The wheel `pip wheel .` builds, once for the module."""
  out = tmp_path_factory.mktemp("wheel")
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
                  REPO], check=True, capture_output=True, timeout=600)
  path, = glob.glob(str(out / "ssl_jax-*.whl"))
  return path


@pytest.fixture(scope="module")
def wheel(wheel_path):
  with zipfile.ZipFile(wheel_path) as archive:
    names = set(archive.namelist())
    metadata, = [name for name in names if name.endswith(".dist-info/METADATA")]
    return names, archive.read(metadata).decode()


def test_the_wheel_holds_every_package_file_of_the_clone(wheel):
  names, _ = wheel
  expected = {os.path.relpath(path, REPO)
              for package in ("ssl_jax", "input_pipeline", "configs")
              for pattern in ("**/*.py", "**/*.cc", "**/py.typed")
              for path in glob.glob(os.path.join(REPO, package, pattern), recursive=True)}
  assert {"ssl_jax/py.typed", "input_pipeline/py.typed", "configs/moco_v2.py",
          "ssl_jax/cpu/conv_weight_grad_cpu.cc"} <= expected
  assert not expected - names, sorted(expected - names)


def test_the_wheel_states_its_license_and_keeps_tensorflow_optional(wheel):
  names, metadata = wheel
  assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
  assert "License-Expression: MIT" in metadata.splitlines()
  base = [line for line in metadata.splitlines()
          if line.startswith("Requires-Dist:") and "extra ==" not in line]
  assert any("tensorboardX" in line for line in base)
  assert not [line for line in base if "tensorflow" in line.lower()], base
  tfds = [line for line in metadata.splitlines() if 'extra == "tfds"' in line]
  assert any("tensorflow-datasets" in line for line in tfds)


@pytest.fixture(scope="module")
def installed_wheel(wheel_path, tmp_path_factory):
  """The wheel installed (without dependencies: this environment has them) into a directory of
  its own, and the environment that puts it first on the path."""
  path = wheel_path
  target = tmp_path_factory.mktemp("site")
  subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                  str(target), path], check=True, capture_output=True, timeout=600)
  environment = {**os.environ, "PYTHONPATH": str(target), "XLA_FLAGS": ""}
  return target, environment


def test_the_installed_command_runs_the_default_job_outside_the_clone(installed_wheel,
                                                                       tmp_path):
  """`ssl-jax` from the wheel, run in an empty directory: the default config (the installed
  configs/moco_v2.py:digits) trains, exports and evaluates; the code is the wheel's."""
  import json
  target, environment = installed_wheel
  where = subprocess.run([sys.executable, "-c", "import configs, ssl_jax; "
                          "print(ssl_jax.__file__); print(configs.__file__)"],
                         cwd=tmp_path, env=environment, capture_output=True, text=True, check=True)
  assert all(line.startswith(str(target)) for line in where.stdout.split())
  result = subprocess.run(
      [str(target / "bin" / "ssl-jax"), "--workdir=run", "--config.num_steps=4",
       "--config.knn_every_steps=0", "--config.tensorboard=False", "--config.quick_compile=True",
       "--config.eval.evaluators=('knn',)"],
      cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["config_name"] == "moco_v2:digits" and summary["steps"] == 4
  assert 0.1 < summary["eval"]["trained"]["knn_top1"] <= 1.0
  assert (tmp_path / "run" / "encoder" / "encoder.json").exists()


def _requirements(extras):
  """The pyproject's requirements of the base install and of `extras`, markers applied."""
  import tomllib
  from packaging.requirements import Requirement
  project = tomllib.load(open(os.path.join(REPO, "pyproject.toml"), "rb"))["project"]
  texts = list(project["dependencies"])
  for extra in extras:
    texts += project["optional-dependencies"][extra]
  requirements = [Requirement(text) for text in texts]
  return [r for r in requirements
          if r.name != "ssl-jax" and (r.marker is None or r.marker.evaluate())]


def _locked(path):
  from packaging.utils import canonicalize_name
  pins = {}
  for line in open(os.path.join(REPO, "locks", path)):
    if line.strip() and not line.startswith("#"):
      name, version = line.strip().split("==")
      pins[canonicalize_name(name)] = version
  return pins


@pytest.mark.parametrize("lock, extras", [("base.txt", ()),
                                          ("test.txt", ("tfds", "tensorboard", "wandb", "test"))])
def test_the_locks_pin_every_requirement_within_its_declared_range(lock, extras):
  """locks/*.txt (pip freeze of a fresh install) give every declared requirement one version,
  inside the range pyproject.toml allows: `pip install -e . -c locks/base.txt` resolves the
  same versions from any index."""
  from packaging.utils import canonicalize_name
  pins = _locked(lock)
  for requirement in _requirements(extras):
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{lock} pins no version of {requirement.name}"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"{lock}: {name}=={pins[name]} is outside {requirement}")
