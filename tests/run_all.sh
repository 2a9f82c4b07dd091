#!/usr/bin/env bash
# The whole test suite on TensorFlow, then the model tests on JAX and PyTorch.
# Usage (from the repository root): bash tests/run_all.sh
# Two pytest-xdist workers, one test file each at a time: module fixtures are built once.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"

echo "== ruff: format and lint (config in pyproject.toml)"
ruff format --check .
ruff check .

# Tests of the model code itself: layers, builder, backbone, classifier, presets.
MODEL_TESTS=(
  tests/test_layering.py
  tests/test_layers.py
  tests/test_architectures.py
  tests/test_presets.py
  tests/test_parity.py
  tests/test_timm_conversion.py
  tests/test_bad_input.py
  tests/test_predecessor_api.py
  tests/test_ssdlite.py
  tests/test_heads_ssdlite_parts.py
  tests/test_output_stride.py
  tests/test_deeplab.py
  tests/test_heads_inputs.py
  tests/test_torchvision_backbone.py
  tests/test_torchvision_classifier.py
  tests/test_ssdlite_torchvision.py
  tests/test_torchvision_segmentation.py
  tests/test_files.py
  tests/test_losses.py
  tests/test_cli.py
)

for backend in jax torch; do
  if python -c "import ${backend}" 2>/dev/null; then
    echo "== KERAS_BACKEND=${backend}: model tests"
    KERAS_BACKEND=${backend} python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=10 "${MODEL_TESTS[@]}"
  else
    echo "== ${backend} is not installed: skipping its run (pip install jax torch==2.13.0)"
  fi
done

echo "== KERAS_BACKEND=tensorflow: every test"
# tests/test_distributed.py (1 vs 2 virtual devices on JAX and TensorFlow, two JAX processes
# over loopback) runs its own subprocesses and takes 10-20 minutes on 2 cores: run it by
# itself, `python -m pytest tests/test_distributed.py`, not in this command.
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15 \
  --ignore=tests/test_distributed.py tests
