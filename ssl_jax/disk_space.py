"""A full disk, said in one line: which directory, how much is free, how much a checkpoint needs.

Before each checkpoint the trainer checks that the disk has room for it (`check_room`): orbax's
background writers, hitting ENOSPC, fill the terminal with hundreds of lines from several
threads. A disk that fills between the check and the write, or during another write (a record,
the exported encoder), surfaces as ENOSPC wrapped in whatever raised it; `full_disk_message`
turns that into the same one line. Committed checkpoints stay intact either way (orbax commits
a step only once it is complete), so the message says so and how to go on.
"""

from __future__ import annotations

import errno
import os
import shutil

_ENOSPC_TEXT = os.strerror(errno.ENOSPC)   # "No space left on device"
_RESUME_ADVICE = ("The committed checkpoints are intact: free some space and run the same "
                  "command to resume")


class DiskFull(RuntimeError):
  """Too little free space for the next checkpoint."""


def check_room(directory: str, needed_bytes: int, what: str) -> None:
  """Raises `DiskFull` unless the disk holding `directory` has `needed_bytes` free."""
  free = shutil.disk_usage(directory).free
  if free < needed_bytes:
    raise DiskFull(f"the disk holding {directory} is full ({free:,} bytes free; {what} needs "
                   f"{needed_bytes:,} bytes). {_RESUME_ADVICE}")


def _caused_by_full_disk(error: BaseException, seen: set[int] | None = None) -> bool:
  seen = set() if seen is None else seen
  if error is None or id(error) in seen:
    return False
  seen.add(id(error))
  if isinstance(error, OSError) and error.errno == errno.ENOSPC:
    return True
  if _ENOSPC_TEXT in str(error):   # wrapped by a library that kept only the text
    return True
  nested = list(getattr(error, "exceptions", ()))   # exception groups (asyncio, orbax)
  return any(_caused_by_full_disk(inner, seen)
             for inner in [error.__cause__, error.__context__, *nested])


def directory_bytes(path: str) -> int:
  """The disk space the files under `path` take (allocated blocks, as `du` counts them: a
  checkpoint's hundred small files take far more than their sizes add up to)."""
  total = 0
  for directory, _, files in os.walk(path):
    for name in files:
      try:
        status = os.lstat(os.path.join(directory, name))
      except OSError:
        continue
      total += max(status.st_blocks * 512, status.st_size)
  return total


def newest_checkpoint_bytes(directory: str) -> int | None:
  """The disk space of the newest checkpoint in `directory` (what the next save writes again),
  None when there is none."""
  steps = sorted((int(name) for name in os.listdir(directory) if name.isdigit()), reverse=True) \
      if os.path.isdir(directory) else []
  return directory_bytes(os.path.join(directory, str(steps[0]))) if steps else None


def full_disk_message(error: BaseException, workdir: str, checkpoint_dir: str) -> str | None:
  """One line for an error caused by a full disk under `workdir` (whose checkpoints are in
  WORKDIR/`checkpoint_dir`); None for any other error."""
  if not _caused_by_full_disk(error):
    return None
  workdir = os.path.abspath(workdir)
  free = shutil.disk_usage(workdir).free if os.path.exists(workdir) else None
  needed = newest_checkpoint_bytes(os.path.join(workdir, checkpoint_dir))
  need_text = (f"a checkpoint of this run takes {needed:,} bytes" if needed is not None
               else "no checkpoint was committed yet")
  free_text = f"{free:,} bytes free" if free is not None else "free space unknown"
  return f"the disk holding {workdir} is full ({free_text}; {need_text}). {_RESUME_ADVICE}"
