"""API keys, per-key rate limits, and backpressure."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture(scope="module")
def gw(start_gateway, redis_server):
    return start_gateway(api_keys="key-a,key-b", rate_limit_per_minute="5", redis_url=redis_server.url)


def test_requests_without_a_valid_key_get_401(gw) -> None:
    assert httpx.get(f"{gw.url}/v1/models").status_code == 401
    wrong = httpx.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer key-a"}).status_code == 200
    assert httpx.get(f"{gw.url}/healthz").status_code == 200  # probes need no key


def test_rate_limit_per_key_gives_429_with_retry_after(gw) -> None:
    codes = [httpx.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer key-b"}).status_code for _ in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    r = httpx.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer key-b"})
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.json()["error"]["type"] == "rate_limit_error"
    # Another key has its own budget (key-a used 1 request in the previous test).
    assert httpx.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer key-a"}).status_code == 200


def test_backpressure_503_when_the_engine_queue_is_full(start_gateway, videos) -> None:
    gw = start_gateway(max_inflight="1")
    with open(videos["short"], "rb") as f:
        file_id = httpx.post(f"{gw.url}/v1/files", files={"file": ("v.mp4", f)}, timeout=60).json()["id"]
    body = {"file_id": file_id, "question": "q", "num_frames": 4, "max_tokens": 300}

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: httpx.post(f"{gw.url}/v1/video/qa", json=body, timeout=120), range(4)))
    codes = sorted(r.status_code for r in results)
    assert 200 in codes and 503 in codes
    busy = next(r for r in results if r.status_code == 503)
    assert busy.headers["Retry-After"] and busy.json()["error"]["code"] == "overloaded"
