"""Dataset presets on small files written in the layouts of the real downloads: ChestX-ray14
(CSV with '|'-separated findings), histopathology (IDC folder tree), retinopathy (trainLabels.csv),
image folders, ImageNet-100 (class list), a generic CSV; patient-wise splits; a tiny end-to-end
run on the ChestX-ray14 layout.

Expected labels are recomputed here from what the generators wrote (file names, CSV rows).
"""

from __future__ import annotations

import csv
import importlib
import os

import jax
import numpy as np
import pytest

from input_pipeline import medical
from input_pipeline import patient_split
from input_pipeline import pipeline
from input_pipeline import sources
from ssl_jax import config_validation
from ssl_jax import train
import dataset_files
import engine_helpers

FILE_PRESETS = ("chestxray14", "histopathology", "retinopathy", "folder", "imagenet100", "csv")


def preset_config(dataset: str, root: str, **overrides):
  config = importlib.import_module("configs.moco_v2").get_config(f"{dataset},tiny")
  config.data.root = str(root)
  return engine_helpers.apply_overrides(config, overrides)


def both_splits(config):
  return (sources.make_source(config.data, config.data.train_split),
          sources.make_source(config.data, config.data.test_split))


def patients_of(source, patient_from_path) -> set[str]:
  return {patient_from_path(path) for path in source.relative_paths}


# ------------------------------------------------------------------------------ ChestX-ray14


def test_chestxray14_multi_hot_labels_from_the_csv_and_patient_wise_split(tmp_path):
  rows = dataset_files.chestxray14(str(tmp_path), num_patients=20)
  config = preset_config("chestxray14", tmp_path)
  assert config.data.label_type == "multi_label" and config.data.num_classes == 14
  train_source, test_source = both_splits(config)
  assert len(train_source) + len(test_source) == len(rows)
  assert test_source.relative_paths[0].startswith("images_00")   # found in the nested folders
  findings = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
              "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
              "Pleural_Thickening", "Hernia"]
  by_name = {row["Image Index"]: row for row in rows}
  for source in (train_source, test_source):
    for index in range(len(source)):
      row = by_name[os.path.basename(source.relative_paths[index])]
      expected = [int(f in row["Finding Labels"].split("|")) for f in findings]
      np.testing.assert_array_equal(source.labels[index], expected)
  assert sum(row["Finding Labels"] == "No Finding" for row in rows) > 0
  element = train_source[0]
  assert element["image"].shape == (20, 20, 3) and element["label"].shape == (14,)
  patient = lambda path: by_name[os.path.basename(path)]["Patient ID"]
  assert not patients_of(train_source, patient) & patients_of(test_source, patient)
  assert len(patients_of(test_source, patient)) == 4   # 20 % of 20 patients


def test_chestxray14_unknown_finding_and_missing_image_are_named(tmp_path):
  dataset_files.chestxray14(str(tmp_path), num_patients=4)
  csv_path = tmp_path / "Data_Entry_2017.csv"
  text = csv_path.read_text()
  (tmp_path / "bad.csv").write_text(text.replace("No Finding", "Hernai", 1))
  config = preset_config("chestxray14", tmp_path, **{"data.labels_csv": "bad.csv"})
  with pytest.raises(ValueError, match="unknown finding 'Hernai'"):
    sources.make_source(config.data, "train")
  os.remove(next(tmp_path.glob("images_*/images/00000002_001.png")))
  config = preset_config("chestxray14", tmp_path)
  with pytest.raises(ValueError, match=r"1 of the 8 images .* e\.g\. \['00000002_001.png'\]"):
    sources.make_source(config.data, "train")


# ---------------------------------------------------------------------------- histopathology


def test_histopathology_binary_labels_from_the_folder_tree_and_patient_split(tmp_path):
  labels = dataset_files.histopathology(str(tmp_path), num_patients=6)
  config = preset_config("histopathology", tmp_path)
  train_source, test_source = both_splits(config)
  assert len(train_source) + len(test_source) == len(labels)
  for source in (train_source, test_source):
    assert [labels[p] for p in source.relative_paths] == list(source.labels)
    assert {int(x) for x in source.labels} == {0, 1}
  patient = lambda path: path.split(os.sep)[0]
  assert not patients_of(train_source, patient) & patients_of(test_source, patient)
  assert len(patients_of(test_source, patient)) == 1   # round(0.2 x 6)
  # A folder that is not a patient's (e.g. the download's nested copy) is named.
  other = tmp_path / "with_notes"
  dataset_files.histopathology(str(other), num_patients=2)
  (other / "notes").mkdir()
  with pytest.raises(ValueError, match="notes has neither a 0/ nor a 1/"):
    sources.make_source(preset_config("histopathology", other).data, "train")


# ------------------------------------------------------------------------------- retinopathy


def test_retinopathy_grades_from_the_csv_and_both_eyes_in_one_split(tmp_path):
  levels = dataset_files.retinopathy(str(tmp_path), num_patients=10)
  config = preset_config("retinopathy", tmp_path)
  assert config.data.label_type == "ordinal" and config.data.num_classes == 5
  train_source, test_source = both_splits(config)
  assert len(train_source) + len(test_source) == 20
  patient = lambda path: os.path.basename(path).split("_")[0]
  for source in (train_source, test_source):
    names = [os.path.splitext(os.path.basename(p))[0] for p in source.relative_paths]
    assert [levels[n] for n in names] == list(source.labels)
    # Both eyes of every patient are in this split.
    assert sorted(names) == sorted(f"{p}_{eye}" for p in patients_of(source, patient)
                                   for eye in ("left", "right"))
  assert not patients_of(train_source, patient) & patients_of(test_source, patient)
  # Unlisted images (the Kaggle test folder) are ignored; a listed name with two files is not.
  dataset_files.write_image(str(tmp_path / "test" / "1_left.jpeg"), np.zeros((8, 8, 3), np.uint8))
  medical.read_retinopathy.cache_clear()
  assert len(sources.make_source(config.data, "train")) == len(train_source)
  dataset_files.write_image(str(tmp_path / "test" / "10_left.jpeg"), np.zeros((8, 8, 3), np.uint8))
  medical.read_retinopathy.cache_clear()
  with pytest.raises(ValueError, match=r"several files .* '10_left'.*train/10_left.jpeg"):
    sources.make_source(config.data, "train")
  assert medical.retinopathy_patient("10_left") == "10"
  assert medical.retinopathy_patient("10_right") == "10"


# ------------------------------------------------------------------------ patient-wise split


def test_patient_split_is_disjoint_seeded_and_deterministic():
  rng = np.random.default_rng(0)
  groups = [f"p{g}" for g in rng.integers(0, 50, 400)]
  first = patient_split.patient_split_indices(groups, 0.2, seed=3)
  again = patient_split.patient_split_indices(list(reversed(groups))[::-1], 0.2, seed=3)
  other = patient_split.patient_split_indices(groups, 0.2, seed=4)
  for key in ("train", "test"):
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["test"], other["test"])
  for split in (first, other):
    train_patients = {groups[i] for i in split["train"]}
    test_patients = {groups[i] for i in split["test"]}
    assert not train_patients & test_patients
    assert len(test_patients) == round(0.2 * len(set(groups)))
    assert sorted(np.concatenate([split["train"], split["test"]])) == list(range(400))
  with pytest.raises(ValueError, match="unknown split 'val'.*'train', 'test'"):
    patient_split.select_split("val", groups, 0.2, 0)


# ------------------------------------------------------------------------------ image folders


def test_folder_classes_are_sorted_subfolders_checked_across_splits(tmp_path):
  dataset_files.image_folder(str(tmp_path), classes=("owl", "cat", "dog"))
  config = preset_config("folder", tmp_path)
  train_source, val_source = both_splits(config)
  assert train_source.classes == val_source.classes == ("cat", "dog", "owl")
  for source in (train_source, val_source):
    expected = [("cat", "dog", "owl").index(p.split(os.sep)[1]) for p in source.relative_paths]
    assert list(source.labels) == expected and len(source) == 12
  assert train_source[0]["image"].shape == (20, 20, 3)


def test_class_folder_missing_from_a_split_is_an_error_naming_it(tmp_path):
  dataset_files.image_folder(str(tmp_path))
  for path in (tmp_path / "val" / "dog").iterdir():
    path.unlink()
  (tmp_path / "val" / "dog").rmdir()
  config = preset_config("folder", tmp_path)
  with pytest.raises(ValueError, match=r"split 'val' .* differ from those of the training split "
                                       r"'train': missing from 'val': \['dog'\]; missing from "
                                       r"'train': \[\]"):
    sources.make_source(config.data, "val")


def test_class_names_that_differ_between_train_and_test_are_listed_on_each_side(tmp_path):
  dataset_files.image_folder(str(tmp_path), splits=("train",), classes=("cat", "dog", "owl"),
                             per_class=1)
  dataset_files.image_folder(str(tmp_path), splits=("test",), classes=("cat", "emu", "dog", "yak"),
                             per_class=1)
  config = preset_config("cifar10_folder", tmp_path, **{"data.num_classes": 3})
  for split in ("train", "test"):   # whichever split is built first
    with pytest.raises(ValueError, match=rf"split 'test' \({tmp_path}/test\) differ from those of "
                                         r"the training split 'train': missing from 'test': "
                                         r"\['owl'\]; missing from 'train': \['emu', 'yak'\]"):
      sources.make_source(config.data, split)


def test_empty_class_folder_and_extra_class_are_errors_naming_them(tmp_path):
  dataset_files.image_folder(str(tmp_path))
  (tmp_path / "train" / "cat" / "0.jpg").unlink()
  for path in (tmp_path / "train" / "cat").iterdir():
    path.unlink()
  (tmp_path / "train" / "cat" / "readme.txt").write_text("no images here")
  config = preset_config("folder", tmp_path)
  with pytest.raises(ValueError, match=f"class folder {tmp_path}/train/cat holds no image files"):
    sources.make_source(config.data, "train")
  dataset_files.image_folder(str(tmp_path / "other"))
  (tmp_path / "other" / "val" / "emu").mkdir()
  config = preset_config("folder", tmp_path / "other")
  with pytest.raises(ValueError,
                     match=r"missing from 'val': \[\]; missing from 'train': \['emu'\]"):
    sources.make_source(config.data, "val")


def test_missing_root_and_split_folder_errors(tmp_path):
  config = preset_config("folder", "")
  with pytest.raises(ValueError, match="data.root is empty"):
    sources.make_source(config.data, "train")
  dataset_files.image_folder(str(tmp_path), splits=("train",))
  config = preset_config("folder", tmp_path)
  with pytest.raises(ValueError, match=r"split 'val' has no folder .*sub-folders of .* \['train'\]"):
    sources.make_source(config.data, "val")


def test_imagenet100_uses_the_class_list_order_and_ignores_other_folders(tmp_path):
  wnids = ("n01530575", "n01440764", "n02085620", "n09999999", "n01443537")
  dataset_files.image_folder(str(tmp_path), classes=wnids, per_class=2)
  class_list = tmp_path / "imagenet100.txt"
  class_list.write_text("n02085620\nn01440764\n\n# comment line\nn01443537\n")
  config = preset_config("imagenet100", tmp_path, **{"data.class_list": str(class_list),
                                                     "data.num_classes": 3})
  assert config.data.train_split == "train" and config.data.test_split == "val"
  train_source, val_source = both_splits(config)
  assert train_source.classes == ("n02085620", "n01440764", "n01443537")
  for source in (train_source, val_source):
    assert len(source) == 6
    expected = [train_source.classes.index(p.split(os.sep)[1]) for p in source.relative_paths]
    assert list(source.labels) == expected
  # The preset expects 100 classes: without a class list the whole folder (5 here) is refused.
  config = preset_config("imagenet100", tmp_path)
  with pytest.raises(ValueError, match="num_classes=100 but .* has 5 classes .*data.class_list"):
    sources.make_source(config.data, "train")
  class_list.write_text("n02085620\nn07777777\n")
  config = preset_config("imagenet100", tmp_path, **{"data.class_list": str(class_list),
                                                     "data.num_classes": 2})
  with pytest.raises(ValueError, match=r"\['n07777777'\] missing from split 'train'"):
    sources.make_source(config.data, "train")


# -------------------------------------------------------------------------------- generic CSV


def test_generic_csv_multi_label_columns_and_patient_column(tmp_path):
  rng = np.random.default_rng(0)
  rows = []
  for k in range(12):
    path = f"scans/s{k}.png"
    dataset_files.write_image(str(tmp_path / path), dataset_files.random_image(rng, 10))
    rows.append({"file": path, "a": k % 2, "b": int(k % 3 == 0), "subject": f"x{k // 3}"})
  with open(tmp_path / "labels.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["file", "a", "b", "subject"])
    writer.writeheader()
    writer.writerows(rows)
  config = preset_config("csv", tmp_path, **{
      "data.csv_path_column": "file", "data.csv_label_columns": "a,b",
      "data.csv_patient_column": "subject", "data.label_type": "multi_label",
      "data.num_classes": 2, "data.test_fraction": 0.25})
  train_source, test_source = both_splits(config)
  by_path = {row["file"]: row for row in rows}
  for source in (train_source, test_source):
    for path, label in zip(source.relative_paths, source.labels):
      assert list(label) == [by_path[path]["a"], by_path[path]["b"]]
  subject = lambda path: by_path[path]["subject"]
  assert len(patients_of(test_source, subject)) == 1
  assert not patients_of(train_source, subject) & patients_of(test_source, subject)
  # A single label column gives one class per image; declaring it multi-label is refused.
  config.data.csv_label_columns = "a"
  with pytest.raises(ValueError, match="label_type='multi_label' but .* one class per image"):
    sources.make_source(config.data, "train")
  config.data.csv_label_columns = "a,c"
  with pytest.raises(ValueError, match=r"no column\(s\) \['c'\]; its columns are \['file'"):
    sources.make_source(config.data, "train")


# -------------------------------------------------------------------- every preset, one batch


def _write_preset_files(dataset: str, root) -> dict:
  """Writes a small dataset for `dataset`; returns the config overrides it needs."""
  root = str(root)
  if dataset == "chestxray14":
    dataset_files.chestxray14(root, num_patients=10)
  elif dataset == "histopathology":
    dataset_files.histopathology(root, num_patients=5)
  elif dataset == "retinopathy":
    dataset_files.retinopathy(root, num_patients=10)
  elif dataset == "folder":
    dataset_files.image_folder(root)
  elif dataset == "imagenet100":
    dataset_files.image_folder(root, classes=("n01", "n02", "n03"))
    with open(os.path.join(root, "classes.txt"), "w") as f:
      f.write("n03\nn01\n")
    return {"data.class_list": os.path.join(root, "classes.txt"), "data.num_classes": 2}
  elif dataset == "csv":
    dataset_files.image_folder(root, splits=("all",))
    with open(os.path.join(root, "labels.csv"), "w") as f:
      f.write("path,label\n")
      for name in ("cat", "dog", "owl"):
        for k in range(4):
          f.write(f"all/{name}/{k}.{'jpg' if k == 0 else 'png'},{name}\n")
  return {}


@pytest.mark.parametrize("dataset", FILE_PRESETS)
def test_each_file_preset_builds_validates_and_yields_batches(tmp_path, dataset):
  overrides = _write_preset_files(dataset, tmp_path)
  config = preset_config(dataset, tmp_path, **overrides)
  config.batch_size = 8
  config.data.image_size = 16
  config_validation.validate_config(config, num_devices=8, process_count=1)
  batch = next(iter(pipeline.build_train_dataset(config, 8)))
  assert batch["view1"].shape == batch["view2"].shape == (8, 16, 16, 3)
  assert batch["view1"].dtype == np.uint8
  evaluation = next(pipeline.eval_batches(config, config.data.test_split, 2))
  label_shape = (2, 14) if dataset == "chestxray14" else (2,)
  assert evaluation["image"].shape == (2, 16, 16, 3) and evaluation["label"].shape == label_shape
  eval_config = importlib.import_module("configs.eval.linear").get_config(f"{dataset},tiny")
  assert eval_config.data.label_type == config.data.label_type
  assert eval_config.data.source == config.data.source


def test_presets_record_label_type_size_and_augmentation():
  expected = {"chestxray14": ("multi_label", 224, False, 30.0, False, False),
              "histopathology": ("single", 50, True, 0.0, True, True),
              "retinopathy": ("ordinal", 224, False, 180.0, True, True)}
  for dataset, (label_type, size, crop, degrees, flip, vertical) in expected.items():
    config = importlib.import_module("configs.byol").get_config(dataset)
    assert (config.data.label_type, config.data.image_size) == (label_type, size)
    augment = config.augment
    assert (augment.random_resized_crop, augment.rotation_degrees, augment.flip,
            augment.vertical_flip) == (crop, degrees, flip, vertical)
  chest = importlib.import_module("configs.byol").get_config("chestxray14").augment
  assert (chest.jitter_prob, chest.brightness, chest.contrast, chest.saturation, chest.hue,
          chest.grayscale_prob, tuple(chest.blur_prob)) == (0.8, 0.4, 0.4, 0.4, 0.1, 0.2,
                                                            (0.5, 0.5))
  assert tuple(importlib.import_module("configs.moco_v2").get_config(
      "histopathology").augment.crop_scale) == (0.4, 1.0)
  # The natural-image presets keep their augmentation exactly.
  cifar = importlib.import_module("configs.moco_v2").get_config("cifar10").augment
  assert (cifar.random_resized_crop, cifar.rotation_degrees, cifar.vertical_flip) == (True, 0.0,
                                                                                       False)


# -------------------------------------------------------------------------------- end to end


def test_chestxray14_trains_exports_and_evaluates_multi_label(tmp_path):
  """A few MoCo v2 steps on the ChestX-ray14 layout, the end-of-run kNN / linear mean AUC, and
  the linear evaluation config on the exported encoder."""
  root = tmp_path / "cxr"
  dataset_files.chestxray14(str(root), num_patients=40)
  config = engine_helpers.small_config("moco_v2", "chestxray14", **{
      "data.root": str(root), "num_steps": 3, "eval.at_end": True,
      "eval.baselines": ("random_init", "pixels"), "eval.knn.ks": (5,)})
  # One device: this test is about the data path (sharding has its own tests), and the step
  # compiles faster unpartitioned.
  summary = train.train_and_evaluate(config, str(tmp_path / "run"), show_progress=False,
                                     devices=jax.devices()[:1])
  assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
  for name in ("trained", "random_init", "pixels"):
    results = summary["eval"][name]
    assert 0.0 <= results["knn_mean_auc"] <= 1.0 and 0.0 <= results["linear_mean_auc"] <= 1.0
    assert "knn_top1" not in results
  assert "kNN mean AUC" in train.results_table(summary)
  assert (tmp_path / "run" / "classes.txt").read_text().split() == list(medical.CHESTXRAY14_FINDINGS)

  from ssl_jax.evaluation import runner
  eval_config = importlib.import_module("configs.eval.linear").get_config("chestxray14,tiny")
  eval_config.data.root = str(root)
  eval_config.encoder = str(tmp_path / "run" / "encoder")
  eval_config.eval.batch_size = 32
  eval_config.eval.linear.l2_num = 3
  eval_config.eval.linear.iterations = 20
  eval_config.eval.baselines = ()
  report = runner.run_evaluation(eval_config, str(tmp_path / "eval"), print_table=False,
                                 devices=jax.devices()[:1])
  assert 0.0 <= report["evaluations"]["linear"]["results"]["encoder"]["mean_auc"] <= 1.0
  # The same encoder on the folder preset, whose class count (0: 'from the data') is resolved.
  dataset_files.image_folder(str(tmp_path / "folder"))
  knn_config = importlib.import_module("configs.eval.knn").get_config("folder,tiny")
  knn_config.data.root = str(tmp_path / "folder")
  knn_config.encoder = eval_config.encoder
  knn_config.eval.batch_size = 32
  knn_config.eval.knn.ks = (3,)
  knn_config.eval.baselines = ()
  report = runner.run_evaluation(knn_config, str(tmp_path / "eval_knn"), print_table=False,
                                 devices=jax.devices()[:1])
  assert report["config"]["data"]["num_classes"] == 3
  assert 0.0 <= report["evaluations"]["knn"]["results"]["encoder"]["top1_k3"] <= 1.0
  few_shot = importlib.import_module("configs.eval.few_shot").get_config("chestxray14,tiny")
  few_shot.encoder = eval_config.encoder
  with pytest.raises(config_validation.ConfigError,
                     match=r"evaluators \['few_shot'\] need one class per image"):
    runner.run_evaluation(few_shot, str(tmp_path / "eval_few_shot"), print_table=False,
                          devices=jax.devices()[:1])


def test_empty_root_fails_before_any_device_work(tmp_path):
  config = engine_helpers.small_config("moco_v2", "chestxray14")
  with pytest.raises(config_validation.ConfigError, match="data.root is empty.*chestxray14"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run") == []
