"""API keys, per-key rate limits, and backpressure."""

from __future__ import annotations

import time
import uuid

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
