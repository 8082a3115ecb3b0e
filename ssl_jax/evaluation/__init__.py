"""Evaluation of encoders on frozen features: feature extraction, kNN, linear probe."""
