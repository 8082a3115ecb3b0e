"""Image folders: `root/<split>/<class>/**/<image>`, the class being the sub-folder's name.

The layout of torchvision's ImageFolder and of an extracted ImageNet (`root/train/n01440764/...`,
`root/val/n01440764/...`). Labels are indices into the class list, which is

- the lines of `data.class_list` when given (one class folder name per line; ImageNet-100 is such
  a list of 100 wnids over the 1000 folders of ImageNet, the other folders being ignored), or
- the sorted sub-folder names of the training split otherwise.

Every split is checked against that list, so label 7 means the same class in every split: a class
folder missing from a split, an extra class folder in a split (without a class list; the error
lists the names missing on each side), or a class folder without images is an error naming the
folder.

Files are listed class after class, so the first N examples of a split are a few classes only:
evaluation caps draw a stratified subset instead (eval_subset.py).
"""

from __future__ import annotations

import functools
import logging
import os

from input_pipeline import file_list_source
from input_pipeline import image_files


def _subfolders(directory: str) -> list[str]:
  return sorted(entry.name for entry in os.scandir(directory)
                if entry.is_dir() and not entry.name.startswith("."))


def read_class_list(path: str) -> tuple[str, ...]:
  """Class names, one per line (blank lines and '#' comments ignored), in file order."""
  if not os.path.isfile(path):
    raise ValueError(f"data.class_list={path} is not a file (expected one class folder name per "
                     "line)")
  with open(path) as f:
    names = [line.split("#", 1)[0].strip() for line in f]
  names = [name for name in names if name]
  if not names:
    raise ValueError(f"data.class_list={path} lists no classes")
  duplicates = sorted({name for name in names if names.count(name) > 1})
  if duplicates:
    raise ValueError(f"data.class_list={path} lists {duplicates} more than once")
  return tuple(names)


def _split_dir(root: str, split: str) -> str:
  directory = os.path.join(root, split)
  if not os.path.isdir(directory):
    raise ValueError(f"split {split!r} has no folder {directory}; the sub-folders of {root} are "
                     f"{_subfolders(root)} (set data.train_split / data.test_split to them)")
  return directory


def images_under(directory: str) -> list[str]:
  """Image files below `directory`, as paths relative to it, in a fixed (sorted) order.

  Links to directories are followed, each real directory once: a link back up the tree (a
  cycle) or a second link to a directory already listed is skipped with a warning, instead of
  listing its images again and again."""
  found = []
  visited = {os.path.realpath(directory)}
  for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
    dirnames.sort()
    for name in list(dirnames):
      real = os.path.realpath(os.path.join(dirpath, name))
      if real in visited:
        logging.warning("skipping %s: it links to %s, which is already listed",
                        os.path.join(dirpath, name), real)
        dirnames.remove(name)
      visited.add(real)
    relative = os.path.relpath(dirpath, directory)
    found.extend(os.path.normpath(os.path.join(relative, name))
                 for name in sorted(filenames) if image_files.is_image_file(name))
  return found


def class_names(root: str, train_split: str, class_list: str = "") -> tuple[str, ...]:
  """The class list: `class_list`'s lines, or the sorted class folders of the training split."""
  if class_list:
    return read_class_list(os.path.expanduser(class_list))
  classes = tuple(_subfolders(_split_dir(root, train_split)))
  if not classes:
    raise ValueError(f"the training split folder {os.path.join(root, train_split)} has no class "
                     "sub-folders (expected <root>/<split>/<class>/<images>)")
  return classes


def _check_class_folders(root: str, split: str, classes: tuple[str, ...], train_split: str,
                         from_class_list: bool) -> None:
  """Every class needs a folder in every split; without a class list the splits must hold the
  same class folders. The error lists what is missing on each side."""
  split_dir = _split_dir(root, split)
  present = set(_subfolders(split_dir))
  missing = [name for name in classes if name not in present]
  if from_class_list:
    if missing:
      raise ValueError(f"class folder(s) {missing[:20]} missing from split {split!r} "
                       f"({split_dir}); every split must hold a folder for each of the "
                       f"{len(classes)} classes of data.class_list")
    return
  extra = sorted(present - set(classes))
  if missing or extra:
    raise ValueError(
        f"the class folders of split {split!r} ({split_dir}) differ from those of the training "
        f"split {train_split!r}: missing from {split!r}: {missing[:20]}; missing from "
        f"{train_split!r}: {extra[:20]}. Every split must hold the same class folders (or give "
        "data.class_list, the classes to use, one a line)")


@functools.lru_cache(maxsize=8)
def _listing(root: str, split: str, classes: tuple[str, ...]
             ) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """(relative paths, labels) of one split whose class folders are checked; cached because a
  run builds each split's source several times (size, training, evaluation) and walking
  ImageNet takes seconds."""
  split_dir = _split_dir(root, split)
  paths, labels = [], []
  for label, name in enumerate(classes):
    images = images_under(os.path.join(split_dir, name))
    if not images:
      raise ValueError(f"class folder {os.path.join(split_dir, name)} holds no image files "
                       f"(extensions {list(image_files.IMAGE_EXTENSIONS)})")
    paths.extend(os.path.join(split, name, path) for path in images)
    labels.extend([label] * len(images))
  return tuple(paths), tuple(labels)


def folder_source(root: str, split: str, *, train_split: str, class_list: str = "",
                  max_skipped_fraction: float = 0.01, name: str = "folder",
                  checked_splits: tuple[str, ...] = ()) -> file_list_source.ImageListSource:
  """`split` of an image-folder dataset; labels are indices into `class_names(...)`.

  The class folders of the training split and of `checked_splits` (the config's evaluation
  splits) are checked as well, whichever split is built: a run builds the training split first,
  so a test split that does not match stops it before training instead of after."""
  root = file_list_source.check_root(root, name)
  classes = class_names(root, train_split, class_list)
  for checked in dict.fromkeys((train_split, split) + tuple(checked_splits)):
    _check_class_folders(root, checked, classes, train_split, bool(class_list))
  if split != train_split:   # its empty class folders too, so they fail at the first source built
    _listing(root, train_split, classes)
  paths, labels = _listing(root, split, classes)
  return file_list_source.ImageListSource(
      root, paths, labels, max_skipped_fraction=max_skipped_fraction,
      description=f"images of the {name} split {split!r}", classes=classes)
