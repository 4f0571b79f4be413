"""The chart's `helm test` script (helm/videoqa/files/smoke.py) and the engine's probe paths, run against the real
processes the chart deploys: `videoqa engine` and a `videoqa serve --engine-url` gateway with API keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

SMOKE = Path(__file__).resolve().parents[2] / "helm" / "videoqa" / "files" / "smoke.py"


def test_engine_serves_the_probe_paths(engine_url: str) -> None:
    assert httpx.get(f"{engine_url}/healthz", timeout=10).status_code == 200
    ready = httpx.get(f"{engine_url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"engine": True}


def test_helm_test_script_passes_against_a_gateway(start_gateway) -> None:
    gateway = start_gateway(api_keys="k-smoke,k-other")
    env = {
        **os.environ,
        "GATEWAY_URL": gateway.url,
        "API_KEYS": "k-smoke,k-other",
        "READY_TIMEOUT_S": "120",
        "QUESTION": "What is shown?",
    }
    proc = subprocess.run([sys.executable, str(SMOKE)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for step in ("/readyz", "POST /v1/files", "POST /v1/video/qa", "POST /v1/chat/completions", "GET /metrics"):
        assert f"ok: {step}" in proc.stdout


def test_helm_test_script_fails_without_the_api_key(start_gateway) -> None:
    gateway = start_gateway(api_keys="k-smoke")
    env = {**os.environ, "GATEWAY_URL": gateway.url, "API_KEYS": "", "READY_TIMEOUT_S": "60"}
    proc = subprocess.run([sys.executable, str(SMOKE)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "FAILED at POST /v1/files: HTTP 401" in proc.stderr
