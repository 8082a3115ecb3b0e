"""Where the training loop's scalars go besides metrics.jsonl: the log, TensorBoard event files
and, when asked for, a Weights & Biases run.

The event files are written with tensorboardX, which needs only protobuf: no TensorFlow, whose
import (clu's writer needed it) cost about 7 s of every launch and 1.3 GB of every install.
`tensorboard --logdir WORKDIR/tensorboard` reads them as it reads TensorFlow's. W&B is optional
(`pip install -e ".[wandb]"`, `--config.wandb.project=NAME`); a resumed run continues the same W&B
run, whose id is kept in WORKDIR/wandb_run_id.
"""

from __future__ import annotations

import logging
import os
import secrets

# Where the events of a run go, under its workdir.
TENSORBOARD_DIR = "tensorboard"
# The W&B run of a workdir, so that a resume logs into the same run.
WANDB_RUN_ID_FILE = "wandb_run_id"


class ConsoleWriter:
  """Scalars and the config to the log (absl/logging INFO), as one line per call."""

  def write_scalars(self, step: int, scalars: dict) -> None:
    logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.5g}" for k, v in scalars.items()))

  def write_hparams(self, hparams: dict) -> None:
    logging.info("hparams: %s", hparams)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class TensorBoardWriter(ConsoleWriter):
  """ConsoleWriter plus TensorBoard events in `logdir`: each scalar under its name and step, and
  the config as a two-column table in TensorBoard's Text tab (tag 'config')."""

  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter   # imported here: only runs that write events need it
    self._events = SummaryWriter(logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: dict) -> None:
    super().write_scalars(step, scalars)
    for name, value in scalars.items():
      self._events.add_scalar(name, float(value), global_step=step)

  def write_hparams(self, hparams: dict) -> None:
    super().write_hparams(hparams)
    rows = "\n".join(f"| {key} | {value} |" for key, value in sorted(hparams.items()))
    self._events.add_text("config", f"| field | value |\n| --- | --- |\n{rows}", global_step=0)

  def flush(self) -> None:
    self._events.flush()

  def close(self) -> None:
    self._events.close()


class WandbWriter:
  """Scalars (under their step) and the config to a W&B run; files under WORKDIR/wandb."""

  def __init__(self, workdir: str, settings, run_name: str):
    try:
      import wandb   # optional: only runs with config.wandb.project need it
    except ImportError as error:
      raise ValueError(f"config.wandb.project={settings.project!r} needs the wandb package: "
                       f"pip install 'ssl-jax[wandb]' ({error})") from None
    id_path = os.path.join(workdir, WANDB_RUN_ID_FILE)
    if os.path.exists(id_path):
      with open(id_path) as f:
        run_id = f.read().strip()
    else:
      run_id = secrets.token_hex(6)   # W&B run ids: lower-case letters and digits
      with open(id_path, "w") as f:
        f.write(run_id + "\n")
    self._run = wandb.init(project=settings.project, entity=settings.entity or None,
                           name=run_name, id=run_id, resume="allow", dir=workdir,
                           mode=settings.mode)

  def write_scalars(self, step: int, scalars: dict) -> None:
    self._run.log({name: float(value) for name, value in scalars.items()}, step=step)

  def write_hparams(self, hparams: dict) -> None:
    self._run.config.update(hparams, allow_val_change=True)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    self._run.finish()


class WriterGroup:
  """Several writers written to as one."""

  def __init__(self, writers: list):
    self._writers = writers

  def write_scalars(self, step: int, scalars: dict) -> None:
    for writer in self._writers:
      writer.write_scalars(step, scalars)

  def write_hparams(self, hparams: dict) -> None:
    for writer in self._writers:
      writer.write_hparams(hparams)

  def flush(self) -> None:
    for writer in self._writers:
      writer.flush()

  def close(self) -> None:
    for writer in self._writers:
      writer.close()


def create_writer(workdir: str, *, lead: bool, tensorboard: bool, wandb=None,
                  run_name: str = ""):
  """What the lead process writes to: the log, TensorBoard events into WORKDIR/tensorboard when
  `tensorboard` (config.tensorboard), and a W&B run when `wandb.project` (config.wandb) is set.
  Other processes write nothing but the log."""
  if not lead:
    return ConsoleWriter()
  writers = [TensorBoardWriter(os.path.join(workdir, TENSORBOARD_DIR)) if tensorboard
             else ConsoleWriter()]
  if wandb is not None and wandb.project:
    writers.append(WandbWriter(workdir, wandb, run_name))
  return writers[0] if len(writers) == 1 else WriterGroup(writers)
