"""One run per workdir: a second process started on a busy workdir refuses, naming the owner.

The owner holds an advisory `flock` on WORKDIR/owner.lock for as long as it runs, and writes
who it is into the file (pid, host, start time, command). The kernel drops the lock when the
owner exits in any way, kill -9 included, so a lock file left behind never blocks a resume: only
a live owner does. In a multi-process job the lead process owns the workdir for the whole job
(the others write nothing a second job could tear).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from typing import Iterator

OWNER_FILE = "owner.lock"


class WorkdirBusy(RuntimeError):
  """Another live process owns the workdir."""


def _describe(owner: dict) -> str:
  if not owner:
    return "another process (it has not written its name yet)"
  return (f"pid {owner.get('pid')} on host {owner.get('host')}, running since "
          f"{owner.get('started')} ({owner.get('command')})")


def _read_owner(handle: int) -> dict:
  os.lseek(handle, 0, os.SEEK_SET)
  try:
    return json.loads(os.read(handle, 65536).decode() or "{}")
  except ValueError:
    return {}


@contextlib.contextmanager
def own(workdir: str, enabled: bool = True) -> Iterator[None]:
  """Holds the workdir for the duration of the block; raises `WorkdirBusy` if a live process
  holds it. `enabled` False (the non-lead processes of a job) does nothing."""
  if not enabled:
    yield
    return
  path = os.path.join(workdir, OWNER_FILE)
  handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusy(
          f"{workdir} is in use by {_describe(_read_owner(handle))}; two runs in one workdir "
          "would tear each other's checkpoints and records. Wait for it, stop it, or choose "
          "another --workdir") from None
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
             "command": " ".join(sys.argv)}
    os.ftruncate(handle, 0)
    os.pwrite(handle, json.dumps(owner).encode(), 0)
    yield
  finally:
    os.close(handle)   # releases the lock
