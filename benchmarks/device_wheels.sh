#!/bin/bash
# Fills .whl/ with the wheels benchmarks/accelerator.py needs on the lent GPU's image (Python 3.12,
# jax, flax, optax, orbax already there; these are not). About 5 MB; .whl/ is git-ignored and
# travels by naming it in the device call's carry (benchmarks/README.md, "On a lent GPU").
# The versions are those of this repository's environment, so the device runs what CI tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 clu==0.0.12 portpicker==1.6.0
ls -l .whl
