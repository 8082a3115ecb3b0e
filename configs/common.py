"""Shared config presets: the base experiment, dataset presets, augmentation presets, `tiny`.

Every objective config calls `base_config(objective, dataset, ...)` and fills in its own
`config.objective_config` and optimiser; dataset presets and the `tiny` switch are shared so that
`configs/<objective>.py:<dataset>[,tiny]` means the same thing for every objective.
"""

from __future__ import annotations

import ml_collections

DIGITS_MEAN = (0.20,) * 3   # digits images in [0, 1] are mostly background (0)
DIGITS_STD = (0.33,) * 3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# MedMNIST's own normalisation (its examples use Normalize(mean=[.5], std=[.5])).
MEDMNIST_MEAN = (0.5,) * 3
MEDMNIST_STD = (0.5,) * 3
# MedMNIST's task names -> config.data.label_type. A binary task needs no label type of its own:
# it is one class per image with 2 classes, and the MedMNIST metrics follow from that (AUC of the
# class-1 score equals the one-vs-rest mean AUC over the 2 classes when the scores sum to one;
# ACC at threshold 0.5 equals argmax). Ordinal grades are scored as multi-class, as the papers do.
MEDMNIST_LABEL_TYPES = {"binary": "single", "multi-class": "single", "ordinal": "ordinal",
                        "multi-label": "multi_label"}


def _medmnist(flag: str, task: str, num_classes: int, split_sizes: tuple[int, int, int]) -> dict:
  """A MedMNIST v2 preset: the official 28 px file <data.root>/<flag>.npz with its official
  train / val / test splits (input_pipeline/medmnist_source.py); 28 px images take the CIFAR
  stem. `split_sizes` (train, val, test) are the official files' sizes."""
  train, val, test = split_sizes
  return dict(source="medmnist", medmnist_flag=flag, task=task,
              label_type=MEDMNIST_LABEL_TYPES[task], image_size=28, num_classes=num_classes,
              train_split="train", val_split="val", test_split="test",
              split_sizes=dict(train=train, val=val, test=test), mean=MEDMNIST_MEAN,
              std=MEDMNIST_STD, stem="cifar", num_train_examples=train)


# Dataset presets: source, splits, image size, normalisation, and the model stem that suits them.
DATASETS = {
    # sklearn's 8x8 digits, upsampled: 16 px already holds all their detail.
    "digits": dict(source="digits", image_size=16, num_classes=10, train_split="train",
                   test_split="test", mean=DIGITS_MEAN, std=DIGITS_STD, stem="cifar",
                   num_train_examples=1347),
    "cifar10": dict(source="tfds", tfds_name="cifar10", image_size=32, num_classes=10,
                    train_split="train", test_split="test", mean=CIFAR10_MEAN, std=CIFAR10_STD,
                    stem="cifar", num_train_examples=50_000),
    "cifar100": dict(source="tfds", tfds_name="cifar100", image_size=32, num_classes=100,
                     train_split="train", test_split="test", mean=CIFAR10_MEAN, std=CIFAR10_STD,
                     stem="cifar", num_train_examples=50_000),
    "stl10": dict(source="tfds", tfds_name="stl10", image_size=96, num_classes=10,
                  train_split="unlabelled", test_split="test", mean=IMAGENET_MEAN,
                  std=IMAGENET_STD, stem="cifar", num_train_examples=100_000),
    "imagenet": dict(source="tfds", tfds_name="imagenet2012", image_size=224, num_classes=1000,
                     train_split="train", test_split="validation", mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, stem="imagenet", num_train_examples=1_281_167),
    # CIFAR-10 as JPEG files in <root>/{train,test}/<class>/*.jpg (e.g. the "CIFAR-10-images"
    # copy: 50,000 + 10,000). Figures on it come from the JPEG re-encoding, not from TFDS's
    # lossless PNGs, so they are close to but not the same as the `cifar10` preset's.
    "cifar10_folder": dict(source="folder", image_size=32, num_classes=10, train_split="train",
                           test_split="test", mean=CIFAR10_MEAN, std=CIFAR10_STD, stem="cifar",
                           num_train_examples=50_000),
    "synthetic": dict(source="synthetic", image_size=32, num_classes=10, train_split="train",
                      test_split="test", mean=(0.5,) * 3, std=(0.25,) * 3, stem="cifar",
                      num_train_examples=2048),
    # Image files downloaded by hand, read from data.root (see input_pipeline/folder_source.py,
    # csv_source.py, medical.py). No dataset statistics were measured here: the ImageNet mean/std
    # are the usual choice for these sets (and what ImageNet-initialised baselines use); override
    # data.mean / data.std with your own. num_train_examples is informational only (the run
    # counts the files); num_classes 0 means "count the classes in the data".
    # ImageNet-100 (Tian et al. 2020, CMC): the wnids of data.class_list over an ImageNet folder.
    "imagenet100": dict(source="folder", image_size=224, num_classes=100, train_split="train",
                        test_split="val", mean=IMAGENET_MEAN, std=IMAGENET_STD, stem="imagenet",
                        num_train_examples=126_689),
    # Any root/<split>/<class>/<images> tree.
    "folder": dict(source="folder", image_size=224, num_classes=0, train_split="train",
                   test_split="val", mean=IMAGENET_MEAN, std=IMAGENET_STD, stem="imagenet",
                   num_train_examples=0),
    # Any image list with a CSV of labels (columns set by data.csv_*), split patient-wise.
    "csv": dict(source="csv", image_size=224, num_classes=0, train_split="train",
                test_split="test", mean=IMAGENET_MEAN, std=IMAGENET_STD, stem="imagenet",
                num_train_examples=0, labels_csv="labels.csv"),
    # NIH ChestX-ray14: 112,120 frontal X-rays (1024 px, 8-bit gray) of 30,805 patients,
    # 14 findings, multi-label.
    "chestxray14": dict(source="chestxray14", image_size=224, num_classes=14,
                        label_type="multi_label", train_split="train", test_split="test",
                        mean=IMAGENET_MEAN, std=IMAGENET_STD, stem="imagenet",
                        num_train_examples=89_696, labels_csv="Data_Entry_2017.csv"),
    # Breast cancer histopathology (IDC): 277,524 patches of 50x50 px from 279 patients, binary.
    # The patches are used at their own size, hence the small-image stem.
    "histopathology": dict(source="histopathology", image_size=50, num_classes=2,
                           train_split="train", test_split="test", mean=IMAGENET_MEAN,
                           std=IMAGENET_STD, stem="cifar", num_train_examples=222_019),
    # Kaggle diabetic retinopathy: 35,126 fundus photographs (both eyes of 17,563 patients),
    # grades 0-4.
    "retinopathy": dict(source="retinopathy", image_size=224, num_classes=5,
                        label_type="ordinal", train_split="train", test_split="test",
                        mean=IMAGENET_MEAN, std=IMAGENET_STD, stem="imagenet",
                        num_train_examples=28_100, labels_csv="trainLabels.csv"),
    # MedMNIST v2 (Yang et al. 2023), the 12 2D datasets: <data.root>/<name>.npz as downloaded
    # from medmnist.com; MedMNIST+ sizes with --config.data.image_size=64|128|224 (the file
    # <name>_<size>.npz). Tasks and split sizes as MedMNIST's medmnist/info.py gives them.
    "pathmnist": _medmnist("pathmnist", "multi-class", 9, (89_996, 10_004, 7_180)),
    "chestmnist": _medmnist("chestmnist", "multi-label", 14, (78_468, 11_219, 22_433)),
    "dermamnist": _medmnist("dermamnist", "multi-class", 7, (7_007, 1_003, 2_005)),
    "octmnist": _medmnist("octmnist", "multi-class", 4, (97_477, 10_832, 1_000)),
    "pneumoniamnist": _medmnist("pneumoniamnist", "binary", 2, (4_708, 524, 624)),
    "retinamnist": _medmnist("retinamnist", "ordinal", 5, (1_080, 120, 400)),
    "breastmnist": _medmnist("breastmnist", "binary", 2, (546, 78, 156)),
    "bloodmnist": _medmnist("bloodmnist", "multi-class", 8, (11_959, 1_712, 3_421)),
    "tissuemnist": _medmnist("tissuemnist", "multi-class", 8, (165_466, 23_640, 47_280)),
    "organamnist": _medmnist("organamnist", "multi-class", 11, (34_581, 6_491, 17_778)),
    "organcmnist": _medmnist("organcmnist", "multi-class", 11, (13_000, 2_392, 8_268)),
    "organsmnist": _medmnist("organsmnist", "multi-class", 11, (13_940, 2_452, 8_829)),
}
LABEL_TYPES = ("single", "multi_label", "ordinal")
MEDMNIST_DATASETS = tuple(name for name, preset in DATASETS.items()
                          if preset["source"] == "medmnist")

# Two-view augmentation presets. Geometric parts (crop scale, flip) run on the host in uint8;
# photometric parts run on the accelerator with parameters drawn per image. Each entry is a
# pair (view 1, view 2) where the papers make the views asymmetric.
AUGMENTATIONS = {
    # MoCo v2 (Chen et al. 2020): same distribution for both views.
    "moco_v2": dict(crop_scale=(0.2, 1.0), flip=True,
                    jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                    grayscale_prob=0.2, blur_prob=(0.5, 0.5), solarize_prob=(0.0, 0.0)),
    # BYOL (Grill et al. 2020), table 6: asymmetric blur and solarisation.
    "byol": dict(crop_scale=(0.08, 1.0), flip=True,
                 jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                 grayscale_prob=0.2, blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2)),
    # Digits: grey strokes filling an 8x8 frame. Crops below half the area, or a flip, leave two
    # views of one digit hardly more alike than two different digits (the MoCo v2 preset's views
    # correlate about as much across digits as within one), and colour jitter lowered MoCo's
    # kNN in short runs: mild crops only.
    "digits": dict(crop_scale=(0.5, 1.0), flip=False,
                   jitter_prob=0.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                   grayscale_prob=0.0, blur_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0)),
    # Chest X-rays as the intermediate-layers paper (Kaku et al. 2021) augmented them: no random
    # resized crop (a crop can cut away the finding that defines the label), rotation +-30
    # degrees, colour jitter 0.4/0.4/0.4/0.1 w.p. 0.8, grayscale 0.2, blur 0.5. No flip: the
    # heart's side is anatomy, not a nuisance.
    "chestxray14": dict(random_resized_crop=False, rotation_degrees=30.0, flip=False,
                        vertical_flip=False,
                        jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                        grayscale_prob=0.2, blur_prob=(0.5, 0.5), solarize_prob=(0.0, 0.0)),
    # Histopathology patches have no orientation: random resized crop of 40-100 % of the patch
    # (small patches cannot lose more) and both flips. Photometric part: the objective's.
    "histopathology": dict(random_resized_crop=True, crop_scale=(0.4, 1.0), flip=True,
                           vertical_flip=True, rotation_degrees=0.0),
    # Fundus photographs: the eye is a disc whose orientation in the frame is arbitrary, so any
    # rotation plus both flips; no crop (lesions near the border decide the grade).
    # Photometric part: the objective's.
    "retinopathy": dict(random_resized_crop=False, rotation_degrees=180.0, flip=True,
                        vertical_flip=True),
    # MedMNIST at 28 px: crops of half the image or more. The objectives' own go down to a
    # fifth of the area, about 12 px a side of a 28 px image; on BreastMNIST tiny jobs, kNN rose
    # with the milder crops for SimSiam, MoCo v2 and BYOL. Set by dataset name, so it also
    # applies at the MedMNIST+ sizes (64-224 px), where the objective's crops may suit better
    # (--config.augment.crop_scale). Photometric part: the objective's.
    **{name: dict(crop_scale=(0.5, 1.0)) for name in MEDMNIST_DATASETS},
}


def data_config(dataset: str) -> ml_collections.ConfigDict:
  """`config.data` of a dataset preset (shared by the objective and evaluation configs)."""
  preset = DATASETS[dataset]
  return ml_collections.ConfigDict(dict(
      name=dataset,
      source=preset["source"],
      tfds_name=preset.get("tfds_name", ""),
      data_dir="",                    # TFDS data_dir ('' = TFDS default)
      image_size=preset["image_size"],
      num_classes=preset["num_classes"],
      train_split=preset["train_split"],
      # A labelled split for model selection (MedMNIST's official 'val'); '' = the dataset has
      # none, and whatever selects hyperparameters holds out part of the training split.
      val_split=preset.get("val_split", ""),
      test_split=preset["test_split"],
      mean=preset["mean"],
      std=preset["std"],
      num_train_examples=preset["num_train_examples"],
      num_workers=0,                  # grain worker processes (0 = in the main process)
      shuffle_seed=0,
      # 'single' | 'multi_label' (a 0/1 vector of num_classes) | 'ordinal' (grades 0..K-1)
      label_type=preset.get("label_type", "single"),
      # File-based sources (folder, csv, medmnist, chestxray14, histopathology, retinopathy) and
      # array_record (the converter's output directory):
      root="",                        # directory of the download
      # medmnist: which dataset's file, <root>/<flag>.npz (28 px) or <flag>_<size>.npz
      medmnist_flag=preset.get("medmnist_flag", ""),
      class_list="",                  # folder: file of class folder names, one a line
      labels_csv=preset.get("labels_csv", ""),   # CSV of labels, relative to root (or absolute)
      csv_path_column="path",         # csv: column of image paths relative to root
      csv_label_columns="label",      # csv: one column (single label) or several, comma-separated
      csv_patient_column="",          # csv: patient/group column for the split ('' = per image)
      test_fraction=0.2,              # fraction of patients in the 'test' split
      split_seed=0,                   # seed of the patient-wise split (fixed, not config.seed)
      # Undecodable files are skipped; more than this fraction of the files read stops the run.
      max_skipped_fraction=0.01,
      # csv: images listed outside root (absolute paths, '..', links) are refused unless True.
      allow_outside_root=False,
  ))


def base_config(objective: str, dataset: str) -> ml_collections.ConfigDict:
  """The experiment fields shared by all objectives; objective configs fill in the rest and end
  with `finish(config, tiny)`."""
  preset = DATASETS[dataset]
  config = ml_collections.ConfigDict()
  config.name = f"{objective}:{dataset}"
  config.objective = objective
  config.seed = 0

  config.data = data_config(dataset)
  config.augment = ml_collections.ConfigDict(dict(AUGMENTATIONS["moco_v2"]))
  config.augment.blur_kernel_fraction = 0.1   # blur kernel = 10% of the image side (as the papers)
  config.augment.photometric = True   # False: no colour/blur/solarize on the device (benchmarks)
  # Geometric options of the dataset presets (host, uint8); the defaults leave the crop+flip
  # pipeline of the natural-image presets exactly as it was.
  config.augment.random_resized_crop = True   # False: resize (shorter side) + centre crop
  config.augment.rotation_degrees = 0.0       # > 0: rotate by U(-d, d) degrees, per view
  config.augment.vertical_flip = False        # flip upside down w.p. 0.5, per view

  config.model = ml_collections.ConfigDict(dict(
      name="resnet50",
      stem=preset["stem"],
      width=64,               # channels of the first stage; 64 is the standard ResNet
      dtype="float32",        # compute dtype; params stay float32
      # ResNet conv kernels: 'kaiming_normal_fan_out' (torchvision's, the official MoCo / SimCLR
      # / BYOL code) | 'torch_default' (torch's nn.Conv2d default, lightly's ResNets)
      conv_init="kaiming_normal_fan_out",
      # The convolution training uses (params are the same with each; evaluation and exported
      # encoders always use the plain one): 'xla' (plain nn.Conv) | 'cpu_native' (ssl_jax.cpu's
      # faster weight gradient on CPU) | 'auto' (cpu_native in a single-process CPU job).
      conv_impl="auto",
  ))

  config.batch_size = 256     # global batch, split over all devices
  config.num_epochs = 200
  config.num_steps = -1       # > 0 overrides num_epochs

  config.optim = ml_collections.ConfigDict(dict(
      name="sgd",             # 'sgd' | 'lars' | 'adamw'
      base_lr=0.03,           # learning rate for a batch of `lr_batch_scale` images
      lr_batch_scale=256,
      schedule="cosine",      # 'cosine' | 'constant'
      warmup_epochs=0.0,
      momentum=0.9,
      nesterov=False,
      weight_decay=1e-4,
      exclude_bias_and_norm=False,   # LARS/BYOL: no weight decay or adaptation on biases and BN
      # The predictor head (BYOL, SimSiam, ...) as its own group (Tian et al. 2021 tune it apart):
      predictor_schedule="same",     # 'same' | 'constant' (SimSiam's fixed predictor lr)
      predictor_lr_multiplier=1.0,   # predictor lr = this x the group's schedule
      predictor_weight_decay=-1.0,   # < 0: same as weight_decay
      # Biases and BN parameters as their own group, where an objective puts them there (Barlow
      # Twins' `bias_lr_group`): their lr = this x the schedule.
      bias_and_norm_lr_multiplier=1.0,
  ))
  config.ema = ml_collections.ConfigDict(dict(
      tau_base=0.999,
      schedule="constant",    # 'constant' | 'cosine' (BYOL: tau -> 1 over training)
      # False: no EMA, the target is the online network of the step (under stop-gradient), i.e.
      # tau = 0; for objectives without a target (SimSiam), True adds an EMA target.
      enabled=True,
  ))

  config.mesh = ml_collections.ConfigDict(dict(
      data=-1,                # -1: all devices not used by other axes
      fsdp=1,                 # > 1 shards large params, EMA target, opt state over this axis
      fsdp_min_size=2**18,    # only leaves of >= 2 dims and this many elements are sharded
  ))

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3
  config.knn_every_steps = 0          # 0: only at the end
  config.analysis_every_steps = 0     # > 0: objective analysis records (analysis.jsonl)
  config.max_nonfinite_steps = 10     # consecutive skipped steps before the run stops
  # True: compile the init and the train step with XLA's optimisations mostly off, several times
  # faster to compile and slower to run (ssl_jax/quick_compile.py); for runs of a few steps.
  config.quick_compile = False
  # TensorBoard events in WORKDIR/tensorboard (ssl_jax/metric_writers.py, without TensorFlow);
  # False keeps the console and metrics.jsonl only.
  config.tensorboard = True
  # A Weights & Biases run beside them (ssl_jax/metric_writers.py; pip install -e ".[wandb]"):
  # off while project is ''. mode: 'online' | 'offline' (synced later with `wandb sync`) |
  # 'disabled'.
  config.wandb = ml_collections.ConfigDict(dict(project="", entity="", mode="online"))

  config.eval = evaluation_settings(tiny=False)
  config.eval.at_end = True   # evaluate the trained encoder and the baselines after training

  if dataset == "digits":
    _digits_preset(config)
  return config


def evaluation_settings(tiny: bool) -> ml_collections.ConfigDict:
  """`config.eval`: which evaluators run on which baselines, and every evaluator's settings.

  Shared by the objective configs (the end-of-training evaluation) and the evaluation configs
  (configs/eval/, `--mode=eval`), so one protocol has one definition. `tiny` shrinks the costly
  settings for smoke runs and tests."""
  return ml_collections.ConfigDict(dict(
      # Run in this order (keys of ssl_jax.evaluation.evaluators.EVALUATORS).
      evaluators=("knn", "linear"),
      # Rows beside the evaluated encoder (ssl_jax/evaluation/baselines.py).
      baselines=("random_init", "random_init_data_bn", "pixels"),
      # An encoder exported by configs/supervised.py on the same preset and budget: adds the
      # 'supervised' row ('' = none).
      supervised_encoder="",
      batch_size=512,         # feature-extraction batch (padded to the device count)
      max_examples=-1,        # cap on the examples of each split (-1: all)
      # Weighted kNN (Wu et al. 2018): cosine similarity, votes weighted exp(similarity / T).
      knn=dict(ks=(20, 200), temperature=0.07),
      # Linear probe (Kornblith et al. 2019): L2 strength (of 0.5 ||w||^2 next to the mean loss)
      # chosen on a validation split from log-spaced values (they used 45 from 1e-6 to 1e5),
      # then refit on the whole training split.
      linear=dict(
          l2_min=1e-6,
          l2_max=1e5,
          l2_num=12 if tiny else 45,
          holdout_fraction=0.2,           # validation split held out of the training split
          select_by="top1",               # 'top1' | 'mean_per_class' (validation metric)
          iterations=100 if tiny else 300,   # L-BFGS iterations per fit
          # A directory of results keyed by a hash of each probe's exact inputs: a baseline
          # probed by an earlier run (raw pixels, random init) is read, not solved again
          # (ssl_jax/evaluation/probe_memo.py). '' = solve every probe.
          memo_dir="",
      ),
      few_shot=dict(
          split="",                   # '' = data.train_split
          n_way=5,
          shots=(1, 5) if tiny else (1, 5, 20, 50),
          n_query=15,
          episodes=20 if tiny else 600,
          classifier="prototype",     # 'prototype' | 'logistic'
          logistic_l2=1e-2,           # L2 of the logistic option (on l2-normalised features)
      ),
      # The linear probe above on each stage output; spatial_size S > 0 also pools each stage
      # onto an S x S grid.
      layers=dict(spatial_size=0),
      cka=dict(
          other_encoder="random_init",   # 'random_init' | '' (itself) | an encoder directory
          split="",                 # '' = data.test_split
          kernels=("linear", "rbf"),
          rbf_sigma=0.8,
          rbf_sigma_mode="fixed",   # 'fixed' (on l2-normalised rows) | 'median' (x median dist)
          num_subsets=5 if tiny else 50,
          subset_size=256 if tiny else 1000,
          spatial_size=0,           # 0: stages globally pooled; S: pooled onto an S x S grid
      ),
      fine_tune=dict(
          label_fractions=(0.1, 1.0) if tiny else (0.01, 0.1, 1.0),
          steps=30 if tiny else 500,       # per fraction
          batch_size=32 if tiny else 64,   # capped by the subset size
          learning_rate=0.05,
          momentum=0.9,
          weight_decay=0.0,
          bootstrap_samples=200 if tiny else 1000,
          export_encoders=True,
      ),
      saliency=dict(
          split="",               # '' = data.test_split
          num_images=4 if tiny else 8,
          occluder_size=10,       # capped by the image side
          occluder_stride=0,      # 0: automatic (1 up to 84 px, then about side / 56)
      ),
      invariance=dict(
          split="",               # '' = data.test_split
          num_images=32 if tiny else 256,
          sweeps=dict(
              rotation=(0.0, 15.0, 30.0, 45.0, 90.0, 180.0),   # degrees
              hue=(0.0, 0.1, 0.2, 0.3, 0.5),                    # turns
              grayscale=(0.0, 0.5, 1.0),                        # blend strength
              crop_scale=(1.0, 0.8, 0.6, 0.4, 0.2),             # area fraction kept
              flip=(0.0, 1.0),
              blur=(0.0, 0.5, 1.0, 2.0, 4.0),                   # sigma in pixels
          ),
      ),
  ))


def finish(config: ml_collections.ConfigDict, tiny: bool) -> ml_collections.ConfigDict:
  """Applied last by every objective config: the dataset's own augmentation preset (if it has
  one) and the `tiny` switch, which shrinks whatever the objective config chose."""
  use_dataset_augmentation(config)
  if tiny:
    apply_tiny(config)
    config.name += ",tiny"
  return config


def _digits_preset(config: ml_collections.ConfigDict) -> None:
  """A small ResNet that pretrains on sklearn's digits in a few minutes on 2 CPU cores."""
  config.model.name = "resnet18"
  config.model.width = 16
  config.batch_size = 128
  config.num_epochs = 80
  config.log_every_steps = 20
  config.checkpoint_every_steps = 200
  config.knn_every_steps = 200


def use_dataset_augmentation(config: ml_collections.ConfigDict) -> None:
  """Datasets with their own augmentation preset (digits, the medical sets) override the
  objective's in the fields the preset names."""
  if config.data.name in AUGMENTATIONS:
    config.augment.update(AUGMENTATIONS[config.data.name])


def apply_tiny(config: ml_collections.ConfigDict) -> None:
  """Shrinks any config to a complete job of a few minutes at most on 2 CPU cores.

  ResNet-10 (one block a stage) of width 8, batch 64, 200 steps, images of at most 32 px, and
  the evaluators' tiny settings. ResNet-10 rather than 18: a step costs about two thirds as much,
  tiny jobs are most of the test suite's time, and on digits every objective's tiny job still
  beats the random-init encoder with BN statistics from the data, which the tests require (BYOL,
  SimSiam and the default MoCo v2 set 300 steps in their configs for a margin)."""
  config.model.name = "resnet10"
  config.model.width = 8
  config.batch_size = 64
  config.num_epochs = -1
  config.num_steps = 200
  config.data.image_size = min(config.data.image_size, 32)
  config.log_every_steps = 20
  config.checkpoint_every_steps = 100
  config.knn_every_steps = 0
  at_end = config.eval.at_end
  config.eval = evaluation_settings(tiny=True)
  config.eval.at_end = at_end
  config.eval.max_examples = 2048


def parse_arg(arg: str | None, allowed_datasets=tuple(DATASETS)) -> tuple[str, bool]:
  """Parses a config arg like 'digits,tiny' into (dataset, tiny) with clear errors."""
  parts = [p.strip() for p in (arg or "digits").split(",") if p.strip()]
  dataset, tiny = "digits", False
  seen_dataset = False
  for part in parts:
    if part == "tiny":
      tiny = True
    elif part in allowed_datasets:
      if seen_dataset:
        raise ValueError(f"config arg {arg!r} names two datasets; give one of {sorted(allowed_datasets)}")
      dataset, seen_dataset = part, True
    else:
      raise ValueError(
          f"unknown config arg {part!r} in {arg!r}: allowed datasets are "
          f"{sorted(allowed_datasets)}, and 'tiny' shrinks any of them")
  return dataset, tiny
