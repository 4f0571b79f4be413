"""Embedded mode (what `make serve` runs), graceful shutdown, and cancellation on client disconnect."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.utils.net import free_port, wait_http
from tests.utils.procs import descendants, describe, wait_gone
from tests.utils.servers import ENGINE_TOKEN, videoqa_env


def _queue_depth(url: str) -> float:
    return float(re.search(r"^videoqa_engine_queue_depth ([0-9.]+)$", httpx.get(f"{url}/metrics").text, re.M).group(1))


@pytest.mark.engine  # starts its own embedded engine
def test_embedded_default_model_serves_and_sigterm_finishes_in_flight_requests(tmp_path, videos) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    # No --model: the embedded default (demo checkpoint if shipped, else a tiny one built into the cache dir).
    env = videoqa_env(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), shutdown_grace_s="60")
    env["VIDEOQA_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoqa.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", 60, proc)  # alive while the engine still loads
        wait_http(f"{url}/readyz", 240, proc)
        with open(videos["short"], "rb") as f:
            file_id = httpx.post(f"{url}/v1/files", files={"file": ("v.mp4", f)}, timeout=60).json()["id"]
        result: dict = {}

        def ask() -> None:
            body = {"file_id": file_id, "question": "Describe it.", "num_frames": 8, "max_tokens": 400}
            result["response"] = httpx.post(f"{url}/v1/video/qa", json=body, timeout=120)

        worker = threading.Thread(target=ask)
        worker.start()
        deadline = time.monotonic() + 30
        while _queue_depth(url) < 1:  # the request is in the engine
            assert time.monotonic() < deadline
            time.sleep(0.05)
        helpers = descendants(proc.pid)  # vLLM's engine core, the decode forkserver and its worker
        assert len(helpers) >= 3, describe(helpers)
        proc.send_signal(signal.SIGTERM)
        worker.join(120)
        assert result["response"].status_code == 200, result["response"].text
        assert result["response"].json()["usage"]["completion_tokens"] >= 1
        # uvicorn re-raises SIGTERM after its clean shutdown, so the status is "killed by SIGTERM", not a crash.
        assert proc.wait(90) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in log.read_text()
        left = wait_gone(helpers, timeout=60)
        assert not left, f"left running after the gateway's SIGTERM: {describe(left)}"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "cache" / "tiny-default" / "config.json").is_file() or "demo_checkpoint" in log.read_text()


def _engine_unfinished(engine_url: str) -> int:
    """Requests vLLM itself still tracks in the engine process (not the gateway's own gauge)."""
    info = httpx.get(f"{engine_url}/internal/info", headers={"authorization": f"Bearer {ENGINE_TOKEN}"}, timeout=10)
    info.raise_for_status()
    return int(info.json()["engine_unfinished"])


def test_client_disconnect_aborts_the_generation(start_gateway, engine_url, videos) -> None:
    gw = start_gateway()
    with open(videos["short"], "rb") as f:
        file_id = httpx.post(f"{gw.url}/v1/files", files={"file": ("v.mp4", f)}, timeout=60).json()["id"]
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": f"videoqa://files/{file_id}"}},
                    {"type": "text", "text": "Describe everything."},
                ],
            }
        ],
        "max_tokens": 3000,
        "stream": True,
        "num_frames": 4,
    }
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        next(line for line in lines if line.startswith("data: ") and '"content": "' in line)
        assert _queue_depth(gw.url) == 1 and _engine_unfinished(engine_url) == 1
    # The client hung up long before 3000 tokens: the gateway must notice and vLLM must drop the request.
    deadline = time.monotonic() + 20
    while _engine_unfinished(engine_url) != 0:
        assert time.monotonic() < deadline, "generation kept running in the engine after the client disconnected"
        time.sleep(0.1)
    assert _queue_depth(gw.url) == 0
