r"""Holds out a stratified part of an image folder's training split, for choosing settings
without the test split.

  python -m input_pipeline.hold_out_split --root=/data/CIFAR-10-images \
      --output=/data/CIFAR-10-heldout --per_class=500

writes OUTPUT/train/<class>/... (the rest) and OUTPUT/val/<class>/... (`per_class` images of each
class) as symbolic links to ROOT/train's files, so nothing is copied and the folder preset reads
the result as it stands: pretrain and probe with `--config.data.root=OUTPUT
--config.data.test_split=val`, then measure the chosen setting on ROOT's test split.

The draw is a fixed function of the file names and `--seed` (a string; each class draws with
Python's `random.Random(f"{seed}-{class}")` from its sorted image files), so the same command
gives the same split on any machine. docs/results.md chose SimCLR's CIFAR-10 temperature and
MoCo v2's warmup on the split this command makes with the default seed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

from input_pipeline import folder_source

HELD_OUT_SPLIT = "val"
REST_SPLIT = "train"


def held_out_files(root: str, split: str, per_class: int, seed: str
                   ) -> dict[str, tuple[list[str], list[str]]]:
  """{class: (held-out files, the rest)}, paths relative to ROOT/split/<class>."""
  split_dir = os.path.join(root, split)
  chosen = {}
  for name in folder_source.class_names(root, split):
    files = folder_source.images_under(os.path.join(split_dir, name))
    if len(files) <= per_class:
      raise ValueError(f"class {name!r} of {split_dir} has {len(files)} images; "
                       f"holding out {per_class} would leave none to train on (give "
                       f"--per_class below {len(files)})")
    held_out = set(random.Random(f"{seed}-{name}").sample(files, per_class))
    chosen[name] = (sorted(held_out), [path for path in files if path not in held_out])
  return chosen


def write_split(root: str, output: str, split: str, per_class: int, seed: str) -> dict[str, int]:
  """Links ROOT/split's images into OUTPUT/{train,val}; returns the image count of each."""
  if per_class < 1:
    raise ValueError(f"--per_class must be at least 1, got {per_class}")
  source_dir = os.path.abspath(os.path.join(root, split))
  if not os.path.isdir(source_dir):
    raise ValueError(f"no folder {os.path.join(root, split)}: --root must hold the split "
                     f"{split!r} as {split}/<class>/<images>")
  if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
    raise ValueError(f"{output} exists and is not an empty folder; give a new --output folder")
  counts = {HELD_OUT_SPLIT: 0, REST_SPLIT: 0}
  for name, (held_out, rest) in held_out_files(root, split, per_class, seed).items():
    for target_split, files in ((HELD_OUT_SPLIT, held_out), (REST_SPLIT, rest)):
      for path in files:
        link = os.path.join(output, target_split, name, path)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(source_dir, name, path), link)
      counts[target_split] += len(files)
  return counts


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m input_pipeline.hold_out_split",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", required=True, help="dataset folder holding SPLIT/<class>/...")
  parser.add_argument("--output", required=True, help="new folder for train/ and val/")
  parser.add_argument("--per_class", type=int, required=True, help="images held out per class")
  parser.add_argument("--split", default="train", help="the split to divide (default: train)")
  parser.add_argument("--seed", default="heldout", help="the draw's seed, a string")
  args = parser.parse_args(argv)
  try:
    counts = write_split(args.root, args.output, args.split, args.per_class, args.seed)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(f"{args.output}: {counts[REST_SPLIT]} images in {REST_SPLIT}/, "
        f"{counts[HELD_OUT_SPLIT]} in {HELD_OUT_SPLIT}/")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
