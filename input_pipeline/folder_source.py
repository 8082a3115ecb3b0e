"""Image folders: `root/<split>/<class>/**/<image>`, the class being the sub-folder's name.

The layout of torchvision's ImageFolder and of an extracted ImageNet (`root/train/n01440764/...`,
`root/val/n01440764/...`). Labels are indices into the class list, which is

- the lines of `data.class_list` when given (one class folder name per line; ImageNet-100 is such
  a list of 100 wnids over the 1000 folders of ImageNet, the other folders being ignored), or
- the sorted sub-folder names of the training split otherwise.

Every split is checked against that list, so label 7 means the same class in every split: a class
folder missing from a split, an extra class folder in a split (without a class list), or a class
folder without images is an error naming the folder.
"""

from __future__ import annotations

import functools
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


def _images_under(directory: str) -> list[str]:
  """Image files below `directory`, as paths relative to it, in a fixed (sorted) order."""
  found = []
  for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
    dirnames.sort()
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


@functools.lru_cache(maxsize=8)
def _listing(root: str, split: str, classes: tuple[str, ...], allow_extra: bool
             ) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """(relative paths, labels) of one split; cached because a run builds each split's source
  several times (size, training, evaluation) and walking ImageNet takes seconds."""
  split_dir = _split_dir(root, split)
  present = set(_subfolders(split_dir))
  missing = [name for name in classes if name not in present]
  if missing:
    raise ValueError(f"class folder(s) {missing[:20]} missing from split {split!r} ({split_dir}); "
                     f"every split must hold a folder for each of the {len(classes)} classes")
  extra = sorted(present - set(classes))
  if extra and not allow_extra:
    raise ValueError(f"class folder(s) {extra[:20]} in split {split!r} ({split_dir}) are not "
                     "classes of the training split; remove them or list the classes in "
                     "data.class_list")
  paths, labels = [], []
  for label, name in enumerate(classes):
    images = _images_under(os.path.join(split_dir, name))
    if not images:
      raise ValueError(f"class folder {os.path.join(split_dir, name)} holds no image files "
                       f"(extensions {list(image_files.IMAGE_EXTENSIONS)})")
    paths.extend(os.path.join(split, name, path) for path in images)
    labels.extend([label] * len(images))
  return tuple(paths), tuple(labels)


def folder_source(root: str, split: str, *, train_split: str, class_list: str = "",
                  max_skipped_fraction: float = 0.01, name: str = "folder"
                  ) -> file_list_source.ImageListSource:
  """`split` of an image-folder dataset; labels are indices into `class_names(...)`."""
  root = file_list_source.check_root(root, name)
  classes = class_names(root, train_split, class_list)
  # The training split is checked as well, so a bad layout fails at the first source built.
  if split != train_split:
    _listing(root, train_split, classes, bool(class_list))
  paths, labels = _listing(root, split, classes, bool(class_list))
  return file_list_source.ImageListSource(
      root, paths, labels, max_skipped_fraction=max_skipped_fraction,
      description=f"images of the {name} split {split!r}", classes=classes)
