"""Evaluation of encoders: the protocols (`evaluators/`), their maths (one module each), the
baselines every table carries, and the runner that the end of training and `--mode=eval` share."""
