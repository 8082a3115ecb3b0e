r"""Saliency of the pooled features: occlusion (a 10 x 10 occluder of the encoder's mean colour
slides over the image; normalised feature change) and gradient saliency, drawn over the first
`saliency.num_images` test images (saliency_<encoder>.png); reports attentive diffusion, the
percentage of a map's pixels above its mean. The occluder stride is 1 up to 84-px images, then
about side / 56 (`saliency.occluder_stride` overrides it).

Run:
  python main.py --mode=eval --config=configs/eval/saliency.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/saliency
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config, tiny = common.eval_config("saliency", arg)
  config.saliency = ml_collections.ConfigDict(dict(
      split="",               # '' = data.test_split
      num_images=4 if tiny else 8,
      occluder_size=10,       # capped by the image side
      occluder_stride=0,      # 0: automatic (see above)
  ))
  return config
