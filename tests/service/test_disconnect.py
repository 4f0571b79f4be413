"""A client that hangs up on a non-streaming request (REST QA, chat without `stream`) aborts its generation in the
engine, in the fast tier: the real gateway app served by uvicorn on a loopback port (TestClient cannot hang up),
over a FakeEngine whose generations wait until released, so only the abort can end them. The client is a socket
that the test closes once its request is in the engine. The streaming case is
tested against vLLM itself in test_lifecycle.py."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.utils.fake_engine import FakeEngine
from tests.utils.net import free_port, wait_http
from videoqa.service.app import create_app
from videoqa.service.settings import Settings


@pytest.fixture(scope="module")
def served(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeEngine]]:
    engine = FakeEngine(tiny_checkpoint)
    settings = Settings(data_dir=tmp_path_factory.mktemp("disconnect"), decode_workers=1, job_workers=0)
    port = free_port()
    config = uvicorn.Config(create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", 60)
        yield url, engine
    finally:
        if engine.hold is not None:
            engine.hold.set()
        server.should_exit = True
        thread.join(30)


def _http_post(url: str, route: str, body: dict) -> bytes:
    """The bytes of one HTTP/1.1 JSON POST, to send over a socket this test closes itself."""
    payload = json.dumps(body).encode()
    head = f"POST {route} HTTP/1.1\r\nHost: {url.split('//')[1]}\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload


def _qa_body(url: str, video: Path) -> dict:
    with video.open("rb") as f:
        file_id = httpx.post(f"{url}/v1/files", files={"file": (video.name, f, "video/mp4")}, timeout=60).json()["id"]
    return {"file_id": file_id, "question": "What moves?", "num_frames": 4}


@pytest.mark.parametrize("route", ["/v1/video/qa", "/v1/chat/completions"])
def test_a_client_that_hangs_up_aborts_its_generation(served, videos, route: str) -> None:
    url, engine = served
    port = int(url.rsplit(":", 1)[1])
    body = (
        _qa_body(url, videos["short"]) if route == "/v1/video/qa" else {"messages": [{"role": "user", "content": "hi"}]}
    )
    engine.hold = threading.Event()  # generations wait until released: only an abort can end this one
    try:
        before = len(engine.requests)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(_http_post(url, route, body))
            deadline = time.monotonic() + 60
            while len(engine.requests) == before:  # the request is in the engine, waiting
                assert time.monotonic() < deadline, "the request never reached the engine"
                time.sleep(0.02)
        # The client has hung up.
        deadline = time.monotonic() + 20
        while engine.engine_unfinished() != 0:
            assert time.monotonic() < deadline, "the generation kept running after the client hung up"
            time.sleep(0.05)
        assert not engine.hold.is_set()  # ended by the abort, not by a release
    finally:
        engine.hold.set()
    # The gateway keeps serving, and its admission slot came back.
    engine.hold = None
    assert httpx.post(f"{url}{route}", json=body, timeout=30).status_code == 200
    assert "videoqa_inflight_requests 0.0" in httpx.get(f"{url}/metrics", timeout=10).text
