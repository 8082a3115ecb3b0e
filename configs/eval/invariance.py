r"""Invariance of the pooled features to rotation, hue, grayscale, crop scale, flip and blur:
for each strength of each sweep, the cosine similarity of f(x) and f(T(x)) averaged over
`invariance.num_images` test images; results.json plus invariance.png (one panel per transform).

Run:
  python main.py --mode=eval --config=configs/eval/invariance.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/invariance
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config, tiny = common.eval_config("invariance", arg)
  config.invariance = ml_collections.ConfigDict(dict(
      split="",               # '' = data.test_split
      num_images=32 if tiny else 256,
      sweeps=ml_collections.ConfigDict(dict(
          rotation=(0.0, 15.0, 30.0, 45.0, 90.0, 180.0),   # degrees
          hue=(0.0, 0.1, 0.2, 0.3, 0.5),                    # turns
          grayscale=(0.0, 0.5, 1.0),                        # blend strength
          crop_scale=(1.0, 0.8, 0.6, 0.4, 0.2),             # area fraction kept
          flip=(0.0, 1.0),
          blur=(0.0, 0.5, 1.0, 2.0, 4.0),                   # sigma in pixels
      )),
  ))
  return config
