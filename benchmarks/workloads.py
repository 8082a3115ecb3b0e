"""The configs the benchmarks time: the peer's work, and the GPU goals' ResNet-50 work.

A workload is a function (objective, batch_size) -> ConfigDict built from the objective's own
config file, so the benchmark times exactly the step users run (same objective code, optimiser,
EMA, collapse monitors and non-finite guard), with the sizes overridden.
"""

from __future__ import annotations

import importlib

import ml_collections

# Objectives the peer (../shared/bench/peer_lightly.py) implements, by our config name.
PEER_OBJECTIVES = ("moco_v2", "byol", "simsiam")
PEER_METHOD = {"moco_v2": "mocov2", "byol": "byol", "simsiam": "simsiam"}


def objective_config(objective: str, dataset: str) -> ml_collections.ConfigDict:
  """`configs/<objective>.py:<dataset>`, unlocked so the workload can resize it."""
  module = importlib.import_module(f"configs.{objective}")
  return module.get_config(dataset)


def peer_work(objective: str, batch_size: int) -> ml_collections.ConfigDict:
  """The work of ../shared/bench/README.md: ResNet-18 CIFAR stem at 32 px, random two-view
  input without augmentation, SGD momentum 0.9 and weight decay 1e-4, the papers' head sizes.

  BatchNorm is over the whole batch, as in the peer's single-process PyTorch step.
  """
  if objective not in PEER_OBJECTIVES:
    raise ValueError(f"the peer implements {PEER_OBJECTIVES}, not {objective!r}")
  config = objective_config(objective, "synthetic")
  config.model.update(dict(name="resnet18", stem="cifar", width=64, dtype="float32"))
  config.data.image_size = 32
  config.batch_size = batch_size
  config.augment.photometric = False
  config.optim.update(dict(name="sgd", base_lr=0.03, lr_batch_scale=batch_size, momentum=0.9,
                           weight_decay=1e-4, nesterov=False, exclude_bias_and_norm=False,
                           warmup_epochs=0.0))
  if objective == "moco_v2":
    config.objective_config.update(dict(proj_hidden_dim=2048, proj_dim=128, queue_size=65536,
                                        temperature=0.2, symmetric=False, bn_mode="global"))
    config.ema.update(dict(tau_base=0.999, schedule="constant"))
  elif objective == "byol":
    config.objective_config.update(dict(proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096))
    config.ema.update(dict(tau_base=0.99, schedule="constant"))
  elif objective == "simsiam":
    config.objective_config.update(dict(proj_hidden_dim=2048, proj_dim=2048, proj_layers=3,
                                        pred_hidden_dim=512))
  return config


def imagenet_work(objective: str, batch_size: int, dtype: str = "bfloat16") -> ml_collections.ConfigDict:
  """The GPU goals' work: ResNet-50 ImageNet stem at 224 px with the paper's heads and
  augmentation, `dtype` compute (params and optimiser state stay float32)."""
  config = objective_config(objective, "imagenet")
  config.data.update(dict(source="synthetic", num_train_examples=max(batch_size * 8, 2048)))
  config.model.update(dict(name="resnet50", stem="imagenet", width=64, dtype=dtype))
  config.batch_size = batch_size
  return config


def cifar_work(objective: str, batch_size: int, dtype: str = "float32") -> ml_collections.ConfigDict:
  """ResNet-18 CIFAR stem at 32 px with the objective's own CIFAR-10 preset."""
  config = objective_config(objective, "cifar10")
  config.data.update(dict(source="synthetic", num_train_examples=max(batch_size * 8, 2048)))
  config.model.update(dict(name="resnet18", stem="cifar", width=64, dtype=dtype))
  config.batch_size = batch_size
  return config


WORKLOADS = {"peer": peer_work, "imagenet_r50": imagenet_work, "cifar_r18": cifar_work}
