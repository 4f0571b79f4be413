"""URL fetching refuses internal addresses (checked before any connection), re-checks redirects, and fetches
from an explicitly allowed test host."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.utils.net import free_port


@pytest.fixture(scope="module")
def video_host(videos) -> Iterator[str]:
    """An HTTP server on 127.0.0.2 serving a real video, and a redirect to 127.0.0.1."""
    data = Path(videos["short"]).read_bytes()
    target_port = free_port()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/clip.mp4":
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif self.path == "/to-loopback":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{target_port}/clip.mp4")
                self.end_headers()
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.2", free_port("127.0.0.2")), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway(fetch_allow_cidrs='["127.0.0.2/32"]')


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/v.mp4",
        "http://localhost/v.mp4",
        "http://[::1]/v.mp4",
        "http://[::ffff:127.0.0.1]/v.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/v.mp4",
        "http://192.168.1.10/v.mp4",
        "http://100.64.0.1/v.mp4",
        "http://0.0.0.0/v.mp4",
        "http://2130706433/v.mp4",
    ],
)
def test_internal_addresses_are_refused(gw, url: str) -> None:
    r = httpx.post(f"{gw.url}/v1/video/qa", json={"video_url": url, "question": "q"}, timeout=30)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "blocked_address"


def test_allowed_host_is_fetched_and_a_redirect_to_loopback_is_refused(gw, video_host) -> None:
    ok = httpx.post(
        f"{gw.url}/v1/video/qa",
        timeout=120,
        json={"video_url": f"{video_host}/clip.mp4", "question": "q", "num_frames": 2, "max_tokens": 2},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["frames"] == 2
    bounced = httpx.post(f"{gw.url}/v1/video/qa", json={"video_url": f"{video_host}/to-loopback", "question": "q"})
    assert bounced.status_code == 403 and "127.0.0.1" in bounced.json()["error"]["message"]
    gone = httpx.post(f"{gw.url}/v1/video/qa", json={"video_url": f"{video_host}/missing", "question": "q"})
    assert gone.status_code == 502 and gone.json()["error"]["code"] == "upstream_error"
