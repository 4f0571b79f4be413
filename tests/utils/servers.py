"""Starting `videoqa` servers (engine, gateway) as subprocesses."""

from __future__ import annotations

import os

ENGINE_TOKEN = "test-engine-token"
"""The session engine's VIDEOQA_ENGINE_API_TOKEN (tests/service/conftest.py); gateways started there send it."""


def videoqa_env(**settings: str) -> dict[str, str]:
    """The environment for a `videoqa` subprocess: this one's without any VIDEOQA_* variable, plus `settings`
    as VIDEOQA_<NAME> (so a developer's own settings never leak into a test's server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOQA_")}
    env.update({"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env.update({f"VIDEOQA_{k.upper()}": v for k, v in settings.items()})
    return env
