"""The held-out split of an image folder's training split (input_pipeline/hold_out_split.py):
stratified, disjoint, complete, fixed by its seed, read by the cifar10_folder preset as it stands,
and bad input stops it before anything is written."""

import filecmp
import importlib
import os

import numpy as np
import pytest

from input_pipeline import hold_out_split
from input_pipeline import image_files
from input_pipeline import sources
import dataset_files
import engine_helpers

CLASSES = ("cat", "dog", "owl")
PER_CLASS = 6


def _files_by_class(directory):
  return {name: sorted(os.listdir(os.path.join(directory, name)))
          for name in sorted(os.listdir(directory))}


@pytest.fixture
def dataset(tmp_path):
  root = str(tmp_path / "data")
  dataset_files.image_folder(root, splits=("train", "test"), classes=CLASSES, per_class=PER_CLASS)
  return root


def test_split_is_stratified_disjoint_complete_and_links_the_original_files(dataset, tmp_path):
  output = str(tmp_path / "heldout")
  counts = hold_out_split.write_split(dataset, output, "train", per_class=2, seed="heldout")
  assert counts == {"val": 2 * len(CLASSES), "train": (PER_CLASS - 2) * len(CLASSES)}
  original = _files_by_class(os.path.join(dataset, "train"))
  held_out = _files_by_class(os.path.join(output, "val"))
  rest = _files_by_class(os.path.join(output, "train"))
  assert set(held_out) == set(rest) == set(CLASSES)
  for name in CLASSES:
    assert len(held_out[name]) == 2
    assert not set(held_out[name]) & set(rest[name])
    assert sorted(held_out[name] + rest[name]) == original[name]
    for split, files in (("val", held_out[name]), ("train", rest[name])):
      for file in files:
        link = os.path.join(output, split, name, file)
        assert os.path.islink(link)
        assert filecmp.cmp(link, os.path.join(dataset, "train", name, file), shallow=False)


def test_the_seed_fixes_the_draw(dataset, tmp_path):
  def held_out(seed, folder):
    output = str(tmp_path / folder)
    hold_out_split.write_split(dataset, output, "train", per_class=3, seed=seed)
    return _files_by_class(os.path.join(output, "val"))

  first = held_out("heldout", "a")
  assert held_out("heldout", "b") == first
  # C(6, 3) = 20 draws per class: three classes all drawing alike by chance is 1 in 8,000.
  assert held_out("other", "c") != first


def test_the_folder_preset_reads_the_result_with_the_same_labels(dataset, tmp_path):
  output = str(tmp_path / "heldout")
  hold_out_split.write_split(dataset, output, "train", per_class=2, seed="heldout")
  config = importlib.import_module("configs.moco_v2").get_config("cifar10_folder,tiny")
  config = engine_helpers.apply_overrides(
      config, {"data.root": output, "data.test_split": "val", "data.num_classes": 3})
  val = sources.make_source(config.data, "val")
  train = sources.make_source(config.data, "train")
  assert (len(val), len(train)) == (2 * len(CLASSES), (PER_CLASS - 2) * len(CLASSES))
  for index in range(len(val)):
    example = val[index]
    class_name, file = val.relative_paths[index].split(os.sep)[-2:]
    assert CLASSES[int(example["label"])] == class_name
    original = image_files.decode_image_file(os.path.join(dataset, "train", class_name, file))
    np.testing.assert_array_equal(example["image"], original)


@pytest.mark.parametrize("per_class, existing_output, expected", [
    (6, False, r"class 'cat' of .*/train has 6 images; holding out 6 would leave none"),
    (0, False, r"--per_class must be at least 1, got 0"),
    (2, True, r"exists and is not an empty folder; give a new --output folder"),
])
def test_bad_input_is_named_and_writes_nothing(dataset, tmp_path, per_class, existing_output,
                                               expected):
  output = tmp_path / "heldout"
  if existing_output:
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
  with pytest.raises(ValueError, match=expected):
    hold_out_split.write_split(dataset, str(output), "train", per_class=per_class, seed="s")
  if existing_output:
    assert os.listdir(output) == ["notes.txt"]
  else:
    assert not output.exists()


def test_command_line_reports_counts_and_names_a_missing_split(dataset, tmp_path, capsys):
  output = str(tmp_path / "heldout")
  assert hold_out_split.main([f"--root={dataset}", f"--output={output}", "--per_class=1"]) == 0
  assert capsys.readouterr().out.strip() == f"{output}: 15 images in train/, 3 in val/"
  assert hold_out_split.main([f"--root={tmp_path}", f"--output={tmp_path / 'x'}",
                              "--per_class=1"]) == 2
  assert f"no folder {tmp_path}/train" in capsys.readouterr().err
