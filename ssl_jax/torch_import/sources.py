"""The published checkpoint families the converter knows: where the encoder sits in each file, which
architecture it is, and the input normalisation its training code used.

Normalisation matters as much as the weights: an encoder fed differently normalised pixels than it
was trained on loses accuracy silently. The values below are those of each project's data
pipeline (ImageNet statistics for the torchvision-style pipelines; none for SimCLR, whose
TensorFlow code feeds [0, 1] pixels; the CheXpert statistics of MoCo-CXR; CovidPrognosis feeds
histogram-equalised X-rays in [0, 255], hence std 1/255 on [0, 1] inputs). `load_encoder` applies
mean/std inside the encoder to uint8 or [0, 1] images.

`key_prefixes` are tried in order; the first under which every encoder weight is present wins.
Each family lists its own wrapper first and '' last, so a file already re-saved with plain
torchvision names (as transfer-study scripts do) converts under the same source name.
"""

from __future__ import annotations

import dataclasses

from ssl_jax.torch_import.errors import ConversionError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NO_NORMALISATION_MEAN = (0.0, 0.0, 0.0)
NO_NORMALISATION_STD = (1.0, 1.0, 1.0)
# MoCo-CXR (Sowrirajan et al. 2021), aihc_utils/image_transform.py: grayscale CheXpert statistics.
CHEXPERT_MEAN = (0.5020, 0.5020, 0.5020)
CHEXPERT_STD = (0.085585, 0.085585, 0.085585)


@dataclasses.dataclass(frozen=True)
class Source:
  """One checkpoint family.

  Attributes:
    description: what the checkpoint is, for the README table and the encoder's metadata.
    arch: default backbone (a name models.build_backbone accepts); --arch overrides it.
    key_prefixes: prefixes in front of the torchvision names, tried in order.
    mean, std: per-channel input normalisation of [0, 1] RGB pixels.
    image_size: the resolution the model was trained and evaluated at.
    preprocessing_note: anything beyond mean/std that the user must do to the images.
  """

  description: str
  arch: str
  key_prefixes: tuple[str, ...]
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD
  image_size: int = 224
  preprocessing_note: str = ""


_MOCO = ("module.encoder_q.", "encoder_q.", "")
_DDP = ("module.", "")

SOURCES: dict[str, Source] = {
    "torchvision_r18": Source("torchvision supervised ResNet-18 (ImageNet)", "resnet18", ("",)),
    "torchvision_r50": Source("torchvision supervised ResNet-50 (ImageNet)", "resnet50", ("",)),
    "torchvision_densenet121": Source("torchvision supervised DenseNet-121 (ImageNet)",
                                      "densenet121", ("",)),
    "mocov2_r50": Source("MoCo v2 ResNet-50 (He et al., facebookresearch/moco), e.g. "
                         "moco_v2_800ep_pretrain.pth.tar", "resnet50", _MOCO),
    "swav_r50": Source("SwAV ResNet-50 (Caron et al., facebookresearch/swav), e.g. "
                       "swav_800ep_pretrain.pth.tar", "resnet50", _DDP),
    "simclr_r50": Source("SimCLR v1 ResNet-50 1x converted from TensorFlow to torchvision names "
                         "(e.g. tonylins/simclr-converter's resnet50-1x.pth)", "resnet50", ("",),
                         mean=NO_NORMALISATION_MEAN, std=NO_NORMALISATION_STD),
    "byol_r50": Source("BYOL ResNet-50 converted from the DeepMind JAX checkpoint to torchvision "
                       "names", "resnet50", ("",)),
    "pirl_r50": Source("PIRL ResNet-50 (PyContrast's PIRL.pth, or a VISSL PIRL trunk)", "resnet50",
                       ("module.encoder.", "_feature_blocks.", "")),
    "moco_cxr_r18": Source("MoCo-CXR ResNet-18 pretrained on CheXpert (stanfordmlgroup/MoCo-CXR)",
                           "resnet18", _MOCO, mean=CHEXPERT_MEAN, std=CHEXPERT_STD,
                           image_size=320),
    "moco_cxr_densenet121": Source("MoCo-CXR DenseNet-121 pretrained on CheXpert "
                                   "(stanfordmlgroup/MoCo-CXR)", "densenet121", _MOCO,
                                   mean=CHEXPERT_MEAN, std=CHEXPERT_STD, image_size=320),
    "mimic_chexpert_moco_densenet121": Source(
        "MoCo DenseNet-121 pretrained on MIMIC-CXR + CheXpert (facebookresearch/CovidPrognosis, "
        "a PyTorch Lightning checkpoint)", "densenet121",
        ("model.encoder_q.", "module.encoder_q.", "encoder_q.", ""),
        mean=NO_NORMALISATION_MEAN, std=(1 / 255, 1 / 255, 1 / 255),
        preprocessing_note=("trained on grayscale X-rays histogram-equalised to [0, 255] "
                            "(CovidPrognosis HistogramNormalize) and repeated to 3 channels; "
                            "equalise the images before passing them (as uint8 or [0, 1]); std "
                            "1/255 restores the [0, 255] scale")),
}


def get_source(name: str | None) -> Source:
  if not name:
    raise ConversionError(f"--mode=convert needs --source; allowed: {sorted(SOURCES)}")
  if name not in SOURCES:
    raise ConversionError(f"unknown --source {name!r}; allowed: {sorted(SOURCES)}")
  return SOURCES[name]
