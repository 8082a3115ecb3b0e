"""Input pipeline: grain sources and host crops, plus the on-device photometric augmentation.

Host side (numpy/grain): `make_source`, `build_train_dataset`, `eval_batches`.
Device side (jax, inside the jitted step): `augment_views`, `normalize`.
"""

from __future__ import annotations

from input_pipeline.device_augment import augment_views
from input_pipeline.device_augment import normalize
from input_pipeline.pipeline import build_train_dataset
from input_pipeline.pipeline import eval_batches
from input_pipeline.pipeline import train_dataset_size
from input_pipeline.sources import ArraySource
from input_pipeline.sources import make_source
from input_pipeline.sources import RandomAccessSource
from input_pipeline.sources import SOURCES
from input_pipeline.sources import SyntheticSource
from input_pipeline.sources import TfdsSource

__all__ = [
    "ArraySource",
    "RandomAccessSource",
    "SOURCES",
    "SyntheticSource",
    "TfdsSource",
    "augment_views",
    "build_train_dataset",
    "eval_batches",
    "make_source",
    "normalize",
    "train_dataset_size",
]
