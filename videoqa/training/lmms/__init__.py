"""lmms-eval bridge: a running videoqa gateway as an lmms-eval model, and our evaluation data as an lmms-eval task.

lmms-eval lives in its own virtual environment (.venv-lmms, made by scripts/lmms-eval-env.sh, which `make setup`
runs: it needs filelock<4 and pulls packages the project's own environment must not have), where this project is
installed without its dependencies so that lmms-eval finds the model through the `lmms_eval.models` entry point
(pyproject.toml). Only `model.py` imports
lmms_eval, and only when lmms-eval loads it; `task.py` runs in the project's environment.
"""

from __future__ import annotations

from typing import Any

MODEL_ID = "videoqa"
"""`python -m lmms_eval --model videoqa --model_args base_url=http://gateway:8000,...`"""


def __getattr__(name: str) -> Any:
    # lmms-eval reads MANIFEST from the entry point (lmms_eval.models.registry_v2.load_entrypoint_manifests); built
    # on access so that importing this package never needs lmms_eval.
    if name == "MANIFEST":
        from lmms_eval.models.registry_v2 import ModelManifest

        return ModelManifest(model_id=MODEL_ID, simple_class_path="videoqa.training.lmms.model.VideoQAService")
    raise AttributeError(name)
