"""Where a run's scalars go: a Weights & Biases run (offline mode, read back from its own file
format) that a resume continues, and the errors for a W&B setting that cannot work."""

import glob
import os
import struct

import pytest

from engine_helpers import small_config
from ssl_jax import config_validation, metric_writers, run_records, train

_BLOCK = 32768              # the W&B run file: LevelDB-log-style records in 32 KiB blocks
_FILE_HEADER = 7            # ':W&B', magic 0xBEE1, version
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_records(path):
  """The protobuf records of a W&B run file, reassembled from its block chunks."""
  from wandb.proto import wandb_internal_pb2
  raw = open(path, "rb").read()
  assert raw[:4] == b":W&B"
  position, pending, records = _FILE_HEADER, b"", []
  while position + 7 <= len(raw):
    left_in_block = _BLOCK - position % _BLOCK
    if left_in_block < 7:   # a block's tail too short for a header is padding
      position += left_in_block
      continue
    _, length, kind = struct.unpack("<IHB", raw[position:position + 7])
    data = raw[position + 7:position + 7 + length]
    position += 7 + length
    if kind in (_FULL, _FIRST):
      pending = data
    elif kind in (_MIDDLE, _LAST):
      pending += data
    else:
      continue
    if kind in (_FULL, _LAST):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      records.append(record)
  return records


def _logged_losses(workdir):
  """{step: loss} of every history record of every W&B run file under WORKDIR/wandb."""
  import json
  losses = {}
  for path in glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb")):
    for record in _wandb_records(path):
      if record.WhichOneof("record_type") == "history":
        items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                 for item in record.history.item}
        if "loss" in items:
          losses[items["_step"]] = items["loss"]
  return losses


@pytest.mark.xdist_group("run_safety")
def test_an_offline_wandb_run_gets_every_logged_loss_and_a_resume_continues_it(tmp_path,
                                                                               monkeypatch):
  monkeypatch.setenv("WANDB_SILENT", "true")
  workdir = str(tmp_path / "run")
  wandb = {"wandb.project": "ssl-jax-test", "wandb.mode": "offline"}
  train.train_and_evaluate(small_config("moco_v2", num_steps=6, log_every_steps=2,
                                        checkpoint_every_steps=6, tensorboard=False, **wandb),
                           workdir, show_progress=False)
  run_id = open(os.path.join(workdir, metric_writers.WANDB_RUN_ID_FILE)).read().strip()
  # A resume to step 10: the same W&B run (its id in the run directories' names) continues.
  train.train_and_evaluate(small_config("moco_v2", num_steps=10, log_every_steps=2,
                                        checkpoint_every_steps=6, tensorboard=False, **wandb),
                           workdir, show_progress=False)
  runs = glob.glob(os.path.join(workdir, "wandb", "offline-run-*"))
  assert len(runs) == 2 and all(path.endswith(f"-{run_id}") for path in runs)

  logged = {r["step"]: r["loss"]
            for r in run_records.read_jsonl(os.path.join(workdir, run_records.METRICS_FILE))
            if "loss" in r}
  assert sorted(logged) == [2, 4, 6, 8, 10]
  assert _logged_losses(workdir) == pytest.approx(logged, rel=1e-7)


def test_a_wandb_mode_outside_the_allowed_ones_is_a_config_error():
  config = small_config("simsiam", **{"wandb.project": "p", "wandb.mode": "offlne"})
  with pytest.raises(config_validation.ConfigError, match=r"wandb.mode='offlne'.*'offline'"):
    config_validation.validate_config(config, num_devices=1, process_count=1)


def test_wandb_without_the_package_is_a_config_error_before_any_work(monkeypatch):
  import importlib.util
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *args: None if name == "wandb" else find_spec(name, *args))
  config = small_config("simsiam", **{"wandb.project": "p"})
  with pytest.raises(config_validation.ConfigError, match=r"pip install 'ssl-jax\[wandb\]'"):
    config_validation.validate_config(config, num_devices=1, process_count=1)
