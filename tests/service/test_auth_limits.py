"""API keys, per-key rate limits, and backpressure (admission that queues)."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

BURST_KEYS = [f"burst-{uuid.uuid4().hex[:8]}" for _ in range(2)]  # fresh per run: the shared Redis keeps counts


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def gw(start_gateway, redis_server):
    keys = ",".join(["key-a", *BURST_KEYS])
    return start_gateway(api_keys=keys, rate_limit_per_minute="5", redis_url=redis_server.url)


def test_requests_without_a_valid_key_get_401(gw) -> None:
    assert httpx.get(f"{gw.url}/v1/models").status_code == 401
    wrong = httpx.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer key-a"}).status_code == 200
    assert httpx.get(f"{gw.url}/healthz").status_code == 200  # probes need no key


def test_rate_limit_per_key_gives_429_with_retry_after(gw) -> None:
    # Limits count per wall-clock minute: a burst that straddles a minute edge is redone with an unused key, so the
    # test holds wherever in the minute it starts and whatever ran before it.
    for key in BURST_KEYS:
        minute = time.time() // 60
        codes = [httpx.get(f"{gw.url}/v1/models", headers=_auth(key)).status_code for _ in range(7)]
        r = httpx.get(f"{gw.url}/v1/models", headers=_auth(key))
        if time.time() // 60 == minute:
            break
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.json()["error"]["type"] == "rate_limit_error"
    # Another key has its own budget: at most a few requests of the other tests count against key-a.
    assert httpx.get(f"{gw.url}/v1/models", headers=_auth("key-a")).status_code == 200


class HeldVideo:
    """A loopback server whose /clip.mp4 answers only once released (one byte every second until then, so the
    gateway's fetch neither finishes nor times out): a request fetching it holds its admission slot for exactly
    as long as the test wants."""

    def __init__(self, video: bytes) -> None:
        self.video, self.hits, self.released = video, 0, threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(outer.video)))
                self.end_headers()
                sent = 0
                while not outer.released.wait(1.0) and sent < len(outer.video) - 1:
                    self.wfile.write(outer.video[sent : sent + 1])
                    self.wfile.flush()
                    sent += 1
                self.wfile.write(outer.video[sent:])

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}/clip.mp4"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def _gauge(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


def _until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_admission_queues_within_capacity_and_refuses_past_it(start_gateway, videos) -> None:
    gw = start_gateway(max_inflight="1", max_waiting="1", max_wait_s="120", fetch_allow_cidrs='["127.0.0.2/32"]')
    held = HeldVideo(videos["short"].read_bytes())
    with open(videos["other"], "rb") as f:
        file_id = httpx.post(f"{gw.url}/v1/files", files={"file": ("v.mp4", f)}, timeout=60).json()["id"]
    ask = {"question": "q", "num_frames": 4, "max_tokens": 4}
    pool = concurrent.futures.ThreadPoolExecutor(4)
    try:
        # A holds the one slot (its video is still arriving), B waits in line, C finds the line full.
        a = pool.submit(httpx.post, f"{gw.url}/v1/video/qa", json=ask | {"video_url": held.url}, timeout=120)
        _until(lambda: held.hits == 1)
        b = pool.submit(httpx.post, f"{gw.url}/v1/video/qa", json=ask | {"file_id": file_id}, timeout=120)
        _until(lambda: _gauge(gw.url, "videoqa_waiting_requests") == 1)
        c = httpx.post(f"{gw.url}/v1/video/qa", json=ask | {"file_id": file_id}, timeout=120)
        assert c.status_code == 503 and c.json()["error"]["code"] == "overloaded"
        assert int(c.headers["Retry-After"]) >= 1
        assert not b.done()
        held.released.set()
        assert a.result().status_code == 200 and b.result().status_code == 200  # B waited instead of failing

        # A client that disconnects while waiting leaves the line (and takes no slot with it).
        held.released.clear()
        a2 = pool.submit(httpx.post, f"{gw.url}/v1/chat/completions", json=_chat(held.url), timeout=120)
        _until(lambda: held.hits == 2)
        host, port = gw.url.removeprefix("http://").split(":")
        body = json.dumps(_chat(f"videoqa://files/{file_id}")).encode()
        with socket.create_connection((host, int(port))) as gone:
            gone.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            _until(lambda: _gauge(gw.url, "videoqa_waiting_requests") == 1)
        _until(lambda: _gauge(gw.url, "videoqa_waiting_requests") == 0)
        e = pool.submit(httpx.post, f"{gw.url}/v1/video/qa", json=ask | {"file_id": file_id}, timeout=120)
        _until(lambda: _gauge(gw.url, "videoqa_waiting_requests") == 1)  # the line has room again
        held.released.set()
        assert a2.result().status_code == 200 and e.result().status_code == 200
        _until(lambda: _gauge(gw.url, "videoqa_inflight_requests") == 0)
    finally:
        held.close()
        pool.shutdown(wait=True, cancel_futures=True)


def _chat(url: str) -> dict:
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "q"}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, "num_frames": 4}
