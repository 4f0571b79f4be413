#!/usr/bin/env bash
# lmms-eval's own environment, .venv-lmms: lmms-eval 0.7.3 (--no-deps) with the packages its evaluator imports
# (scripts/lmms-eval-requirements.txt) and this project installed without its dependencies, so lmms-eval finds
# `--model videoqa` through the `lmms_eval.models` entry point (videoqa.training.lmms). Separate from .venv:
# lmms-eval needs filelock<4, which vLLM's stack does not accept, and it talks to the gateway over HTTP only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LMMS_EVAL_VERSION=0.7.3

if [ ! -x .venv-lmms/bin/python ]; then
  "$PY" -m venv .venv-lmms
fi
.venv-lmms/bin/python -m pip install -q --upgrade pip "setuptools>=69" wheel
# torch first, alone: it is the local CPU build, and nothing later may pull a CUDA one.
.venv-lmms/bin/pip install -q "torch==2.13.0"
.venv-lmms/bin/pip install -q -c scripts/lmms-eval-requirements.txt -r scripts/lmms-eval-requirements.txt
.venv-lmms/bin/pip install -q --no-deps "lmms-eval==${LMMS_EVAL_VERSION}"
.venv-lmms/bin/pip install -q --no-deps --no-build-isolation -e .
# From another folder: a stale videoqa.egg-info in this one (left by .venv's editable install) would shadow the
# entry points of the install just made.
(cd / && "$OLDPWD"/.venv-lmms/bin/python -c "
import lmms_eval.models as m
assert 'videoqa' in m.MODEL_REGISTRY_V2.list_model_names(), 'the videoqa entry point did not register'
print('lmms-eval env ready: lmms-eval ${LMMS_EVAL_VERSION}, model videoqa registered')")
