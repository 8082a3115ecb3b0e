"""The evaluation protocols, in one explicit dict (one module per protocol, no registry).

The end of training runs `config.eval.evaluators` (kNN and the linear probe by default) and
`python main.py --mode=eval` runs an evaluation config's; both through `ssl_jax.evaluation.runner`,
with the settings of `config.eval.<name>`.
"""

from __future__ import annotations

from ssl_jax.evaluation.evaluators import (cka, few_shot, fine_tune, invariance, knn, layers,
                                           linear, saliency)
from ssl_jax.evaluation.evaluators.evaluator import Evaluator

EVALUATORS: dict[str, Evaluator] = {
    "knn": knn.EVALUATOR,
    "linear": linear.EVALUATOR,
    "few_shot": few_shot.EVALUATOR,
    "layers": layers.EVALUATOR,
    "cka": cka.EVALUATOR,
    "fine_tune": fine_tune.EVALUATOR,
    "saliency": saliency.EVALUATOR,
    "invariance": invariance.EVALUATOR,
}

__all__ = ["EVALUATORS", "Evaluator"]
