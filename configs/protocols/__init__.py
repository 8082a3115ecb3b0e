"""Results protocols: whole recipes for one dataset, one objective per run (docs/results.md)."""
