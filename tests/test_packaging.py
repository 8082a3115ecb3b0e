"""The wheel `pip wheel .` builds: every module and config of the clone, the files read at run
time (the CPU kernel's source, py.typed), the license, and a base install without TensorFlow."""

import glob
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  out = tmp_path_factory.mktemp("wheel")
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
                  REPO], check=True, capture_output=True, timeout=600)
  path, = glob.glob(str(out / "ssl_jax-*.whl"))
  with zipfile.ZipFile(path) as archive:
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
