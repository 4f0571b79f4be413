"""The gateway's Prometheus series that need more than a request count: the decode pool's restarts, the prefix-cache
hit tokens, and the request latency of a stream (to its last byte). The real app in this process, with
tests/utils/fake_engine.py in place of vLLM (fast tier)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.utils.fake_engine import FakeEngine
from videoqa.service.app import create_app
from videoqa.service.settings import Settings


class Gateway:
    def __init__(self, client: TestClient, engine: FakeEngine) -> None:
        self.client, self.engine = client, engine

    def sample(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when the series has none yet)."""
        text = self.client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0


@pytest.fixture(scope="module")
def gw(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    engine = FakeEngine(tiny_checkpoint, answer="one two three four")
    settings = Settings(data_dir=tmp_path_factory.mktemp("metrics"), decode_workers=1, job_workers=0)
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
        yield Gateway(client, engine)


@pytest.fixture(autouse=True)
def _reset(gw: Gateway) -> Iterator[None]:
    yield
    gw.engine.cached_tokens, gw.engine.chunk_delay_s = 0, 0.0


def test_prefix_cache_hit_tokens_total_adds_every_engine_requests_cached_tokens(gw: Gateway) -> None:
    gw.engine.cached_tokens = 5  # what the engine reports for each request (vLLM: num_cached_tokens)
    before = gw.sample("videoqa_prefix_cache_hit_tokens_total")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "n": 3}
    r = gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 5
    # Three choices are three engine requests, each with its own cached prefix.
    assert gw.sample("videoqa_prefix_cache_hit_tokens_total") == before + 15


def test_decode_pool_restarts_total_counts_each_rebuild_of_the_pool(gw: Gateway, videos) -> None:
    pool = gw.client.app.state.service.frames.pool
    with videos["short"].open("rb") as f:  # an upload is probed in the pool: its worker is running after this
        assert gw.client.post("/v1/files", files={"file": ("v.mp4", f, "video/mp4")}).status_code == 200
    before = gw.sample("videoqa_decode_pool_restarts_total")
    assert before == pool.restarts
    # A worker killed from outside (as by the kernel's OOM killer): the pool is rebuilt on its next task.
    workers = list(pool._executor._processes.values())
    assert workers
    for proc in workers:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    with videos["other"].open("rb") as f:
        gw.client.post("/v1/files", files={"file": ("o.mp4", f, "video/mp4")})
    assert pool.restarts == before + 1
    assert gw.sample("videoqa_decode_pool_restarts_total") == before + 1


def test_request_seconds_of_a_stream_lasts_to_its_last_byte(gw: Gateway) -> None:
    # 4 chunks, each 0.3 s after the previous one: the stream cannot end sooner than 1.2 s after it starts, while its
    # status and headers go out before the first chunk (a latency taken then would be far below that).
    gw.engine.chunk_delay_s = 0.3
    route = {"route": "/v1/chat/completions"}
    count = gw.sample("videoqa_request_seconds_count", **route)
    total = gw.sample("videoqa_request_seconds_sum", **route)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with gw.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 6  # role, 4 words, [DONE]
    assert gw.sample("videoqa_request_seconds_count", **route) == count + 1
    # A lower bound on what was observed (asyncio.sleep never ends early by more than the clock's resolution).
    assert gw.sample("videoqa_request_seconds_sum", **route) - total >= 4 * 0.3 * 0.95
