"""Evaluation configs: one per evaluation, run with `python main.py --mode=eval`."""
