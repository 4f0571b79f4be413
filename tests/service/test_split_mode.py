"""Split mode's deployment contract: the engine API needs the shared token, and the gateway runs without torch
or vLLM (what the slim gateway image relies on; it tokenizes with transformers, which works without torch)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.utils.net import free_port, wait_http
from tests.utils.procs import stop_process
from tests.utils.servers import ENGINE_TOKEN, videoqa_env

pytestmark = pytest.mark.engine

HEAVY = ("torch", "vllm")

# Installed as sitecustomize in every Python process of the gateway (decode workers included): HEAVY look not
# installed (`import` fails, importlib.util.find_spec answers None, as transformers' availability probes expect),
# as in the gateway image; at exit each process records which of them it nevertheless holds.
BLOCKER = f"""
import atexit, os, sys

for _name in {HEAVY!r}:
    sys.modules[_name] = None

@atexit.register
def _record():
    held = [m for m, mod in sys.modules.items() if m.split(".")[0] in {HEAVY!r} and mod is not None]
    if held:
        with open(os.environ["VIDEOQA_TEST_BLOCKED_LOG"], "a") as log:
            log.write(" ".join(held) + "\\n")
"""


def test_engine_api_needs_the_token(engine_url: str) -> None:
    info = f"{engine_url}/internal/info"
    missing = httpx.get(info)
    assert missing.status_code == 401
    assert "VIDEOQA_ENGINE_API_TOKEN" in missing.json()["error"]["message"]
    assert httpx.get(info, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(f"{engine_url}/internal/generate", content=b"\0\0\0\0").status_code == 401
    assert httpx.post(f"{engine_url}/internal/abort/x").status_code == 401
    ok = httpx.get(info, headers={"authorization": f"Bearer {ENGINE_TOKEN}"})
    assert ok.status_code == 200 and ok.json()["ready"]
    # Probes carry no secret: health stays open and says only whether the engine is ready.
    assert httpx.get(f"{engine_url}/internal/health").json() == {"ready": True}


def test_gateway_with_a_wrong_token_says_so(engine_url: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoqa.cli", "serve", "--port", str(port), "--engine-url", engine_url],
        env=videoqa_env(engine_api_token="wrong", decode_workers="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    readyz = f"http://127.0.0.1:{port}/readyz"
    try:
        wait_http(readyz, 60, proc, status=503)
        deadline = time.monotonic() + 60
        while (body := httpx.get(readyz).json())["error"] is None:  # until the engine start has been refused
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        assert body["engine"] is False
        assert "VIDEOQA_ENGINE_API_TOKEN" in body["error"]
    finally:
        stop_process(proc)


def test_split_gateway_runs_without_torch_or_vllm(engine_url: str, videos, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    blocked = tmp_path / "blocked.log"
    blocked.touch()
    port = free_port()
    env = videoqa_env(engine_api_token=ENGINE_TOKEN, data_dir=str(tmp_path / "data"), decode_workers="1")
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["VIDEOQA_TEST_BLOCKED_LOG"] = str(blocked)
    log = tmp_path / "gateway.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoqa.cli", "serve", "--port", str(port), "--engine-url", engine_url],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", 120, proc)
        with videos["short"].open("rb") as f:
            upload = httpx.post(f"{url}/v1/files", files={"file": ("short.mp4", f, "video/mp4")}, timeout=60)
        assert upload.status_code == 200, upload.text
        answer = httpx.post(
            f"{url}/v1/video/qa",
            json={"file_id": upload.json()["id"], "question": "What colour is the square?", "max_tokens": 4},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] > 0
        models = httpx.get(f"{url}/v1/models").json()["data"][0]
        assert models["max_frames"] > 0
        assert httpx.get(f"{url}/metrics").status_code == 200
    finally:
        stop_process(proc)
    assert blocked.read_text() == "", f"the gateway imported: {blocked.read_text()}\n{log.read_text()[-2000:]}"
