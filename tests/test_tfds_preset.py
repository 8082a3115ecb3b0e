"""A TFDS preset run end to end on a TFDS dataset directory prepared here with TFDS's own writer
(no network, no mock of the loader): the path `--config=configs/<objective>.py:cifar10` takes
with `--config.data.data_dir` (issue 29, item 1: it crashed inside tensorflow-datasets on a
missing `importlib_resources`)."""

import os

import numpy as np
import pytest

from engine_helpers import apply_overrides
from input_pipeline import sources
from ssl_jax import train

TRAIN_EXAMPLES, TEST_EXAMPLES = 64, 32


def _examples(count: int, seed: int) -> list[tuple[int, dict]]:
  rng = np.random.default_rng(seed)
  return [(index, {"id": f"{seed}-{index}", "label": index % 10,
                   "image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)})
          for index in range(count)]


@pytest.fixture(scope="module")
def prepared_cifar10(tmp_path_factory):
  import tensorflow_datasets as tfds
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  info = tfds.builder("cifar10").info   # the registered builder's features and version
  splits = {"train": _examples(TRAIN_EXAMPLES, 0), "test": _examples(TEST_EXAMPLES, 1)}
  tfds.dataset_builders.store_as_tfds_dataset(
      name="cifar10", version=str(info.version), features=info.features, split_datasets=splits,
      data_dir=data_dir, file_format="array_record")
  return data_dir, splits


def test_the_tfds_source_reads_what_tfds_wrote(prepared_cifar10):
  data_dir, splits = prepared_cifar10
  source = sources.TfdsSource("cifar10", "test", data_dir)
  assert len(source) == TEST_EXAMPLES
  read = sorted((source[i]["label"], source[i]["image"].tobytes()) for i in range(len(source)))
  written = sorted((example["label"], example["image"].tobytes())
                   for _, example in splits["test"])
  assert read == written


@pytest.mark.xdist_group("tfds_preset")
def test_a_cifar10_preset_job_runs_on_a_prepared_tfds_directory(prepared_cifar10, tmp_path):
  data_dir, _ = prepared_cifar10
  from configs import moco_v2
  config = apply_overrides(moco_v2.get_config("cifar10,tiny"), {
      "data.data_dir": data_dir, "batch_size": 32, "num_steps": 4, "log_every_steps": 2,
      "model.name": "resnet10", "model.width": 4, "objective_config.queue_size": 64,
      "tensorboard": False, "quick_compile": True, "eval.evaluators": ("knn",)})
  summary = train.train_and_evaluate(config, str(tmp_path / "run"), show_progress=False)
  assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])
  # The evaluation read the prepared splits whole, and scored the trained encoder and pixels.
  assert summary["eval_splits"] == {"train": f"all {TRAIN_EXAMPLES}",
                                    "test": f"all {TEST_EXAMPLES}"}
  assert {"trained", "pixels"} <= set(summary["eval"])
  assert os.path.exists(tmp_path / "run" / "encoder" / "encoder.json")


def test_a_tfds_preset_without_tensorflow_datasets_names_the_extra(tmp_path):
  """An install without the [tfds] extra (tensorflow_datasets unimportable; here shadowed by a
  package that fails to import) runs a TFDS preset into one line naming the extra, exit 2."""
  import subprocess
  import sys
  (tmp_path / "tensorflow_datasets").mkdir()
  (tmp_path / "tensorflow_datasets" / "__init__.py").write_text(
      "raise ImportError('No module named tensorflow_datasets')\n")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/moco_v2.py:cifar10,tiny",
       f"--workdir={tmp_path / 'run'}", "--config.tensorboard=False"],
      cwd=repo, capture_output=True, text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": str(tmp_path)})
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().count("\n") == 0
  assert "pip install 'ssl-jax[tfds]'" in result.stderr and "'cifar10'" in result.stderr
