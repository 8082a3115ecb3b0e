"""Where the training loop's scalars go besides metrics.jsonl: TensorBoard event files and the log.

The event files are written with tensorboardX, which needs only protobuf: no TensorFlow, whose
import (clu's writer needed it) cost about 7 s of every launch and 1.3 GB of every install.
`tensorboard --logdir WORKDIR/tensorboard` reads them as it reads TensorFlow's.
"""

from __future__ import annotations

import logging
import os

# Where the events of a run go, under its workdir.
TENSORBOARD_DIR = "tensorboard"


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


def create_writer(workdir: str, tensorboard: bool) -> ConsoleWriter:
  """A TensorBoardWriter into WORKDIR/tensorboard when `tensorboard` (config.tensorboard, on the
  lead process), else a ConsoleWriter."""
  if not tensorboard:
    return ConsoleWriter()
  return TensorBoardWriter(os.path.join(workdir, TENSORBOARD_DIR))
