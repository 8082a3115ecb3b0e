r"""DirectCopy (Wang, Chen, Du & Tian 2021, "Towards demystifying representation learning with
non-contrastive self-supervision", arXiv:2110.04947): DirectPred without the eigendecomposition,
the predictor set to W = F / ||F|| + eps I (ssl_jax/objectives/directcopy.py).

Defaults: everything but the F -> W rule is DirectPred's (configs/directpred.py: networks,
optimiser, EMA 0.996, rho = 0.3, freq = 1, eps = 0.01 and the digits / tiny presets), as the
DirectCopy paper runs it on DirectPred's code and recipe.
- `objective_config.normalization` = 'frobenius' (default) | 'spectral' | 'none': the paper's
  DirectCopy section defines the copied matrix as F normalised by its Frobenius norm, which,
  unlike the spectral norm of DirectPred's "divide by the largest eigenvalue", needs no
  eigendecomposition or power iteration, the point of the method. 'spectral' reproduces
  DirectPred's scaling; 'none' copies F as the official luckmatters `predictor_reg=directcopy`
  branch does (W = F + eps I).

Eigenspace tracking: `--config.analysis_every_steps=N`, then `python main.py --mode=plot
--workdir=W` (W and F share eigenvectors here by construction: the record checks the machinery).

Run:
  python main.py --config=configs/directcopy.py:digits --workdir=runs/directcopy_digits
  python main.py --config=configs/directcopy.py:cifar10 --workdir=runs/directcopy_cifar10
  python main.py --config=configs/directcopy.py:digits,tiny --workdir=/tmp/directcopy_tiny
"""

import ml_collections

from configs import directpred


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = directpred.build("directcopy", arg)
  config.objective_config.normalization = "frobenius"   # 'frobenius' | 'spectral' | 'none'
  return config
