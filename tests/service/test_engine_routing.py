"""Split mode with several engines, in the fast tier: the gateway's engine client (videoqa.service.engine_client)
against stand-in engines, i.e. the real engine API (engine_server.py) on loopback ports over a FakeEngine. Each
stand-in starts in well under a second, so engines can go away and come back within a test; the real `videoqa
engine` path is tested against the session engine (test_split_mode.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.utils.fake_engine import EngineServer, FakeEngine
from tests.utils.redis_server import RedisServer
from videoqa.model.engine import GenerationRequest
from videoqa.service.app import create_app
from videoqa.service.engine_client import EngineUnavailableError, RemoteEngine, engine_urls
from videoqa.service.settings import Settings
from videoqa.service.state import RedisState, create_state

TOKEN = "routing-token"


@pytest.fixture
def stand_in(tiny_checkpoint: Path) -> Iterator[Callable[..., EngineServer]]:
    started: list[EngineServer] = []

    def start(port: int = 0, **engine: str) -> EngineServer:
        server = EngineServer(FakeEngine(tiny_checkpoint, **engine), token=TOKEN, port=port).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _answer(engine: RemoteEngine, timeout: float = 30) -> str:
    """One generation's text; a request stuck on a held engine fails the test instead of hanging it."""

    async def run() -> str:
        text = ""
        async for chunk in engine.generate(GenerationRequest(prompt=[1, 2, 3], max_tokens=8)):
            text = chunk.text
        return text

    return await asyncio.wait_for(run(), timeout)


def test_engine_urls_accepts_a_comma_separated_list() -> None:
    assert engine_urls("http://a:1/, http://b:2,http://a:1") == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError, match="VIDEOQA_ENGINE_URL"):
        engine_urls(" , ")


async def test_requests_go_to_the_engine_with_the_fewest_outstanding(stand_in) -> None:
    a, b = stand_in(answer="from a"), stand_in(answer="from b")
    a.engine.hold = threading.Event()  # A keeps what it gets until released
    engine = RemoteEngine(f"{a.url},{b.url}", token=TOKEN, health_interval_s=0.2)
    await engine.start()
    try:
        await _until(engine.ready)
        held = asyncio.create_task(_answer(engine))  # a tie: the first listed, A
        await _until(lambda: len(a.engine.requests) == 1)
        assert engine.queue_depth() == 1
        # Both engines' series, told apart by an engine label (the same names would otherwise collide).
        families = list(text_string_to_metric_families(await engine.metrics_text()))
        running = {s.labels["engine"]: s.value for f in families for s in f.samples}
        assert running == {a.url: 1.0, b.url: 0.0}
        # A has one outstanding, B none: round robin would send the second of these to A, which holds it.
        assert [await _answer(engine) for _ in range(3)] == ["from b"] * 3
        assert (len(a.engine.requests), len(b.engine.requests)) == (1, 3)
        a.engine.hold.set()
        assert await held == "from a"
        assert engine.queue_depth() == 0
    finally:
        await engine.stop()


async def test_engines_that_go_away_are_skipped_and_readiness_follows_them_back(stand_in) -> None:
    a, b = stand_in(answer="from a"), stand_in(answer="from b")
    # Health checks far apart: what happens before the next one is the request path's own doing.
    engine = RemoteEngine([a.url, b.url], token=TOKEN, health_interval_s=3600)
    await engine.start()
    try:
        a.stop()
        # A refuses the connection: the request goes to B instead of failing, and A is out at once.
        assert await _answer(engine) == "from b" and engine.ready()
        assert await _answer(engine) == "from b" and len(b.engine.requests) == 2
        b.stop()
        with pytest.raises(EngineUnavailableError) as err:
            await _answer(engine)
        assert err.value.status == 503 and int(err.value.headers["Retry-After"]) >= 1
        assert not engine.ready()
    finally:
        await engine.stop()

    # Readiness both ways, by the health checks alone: gone -> not ready; back on its port -> ready and used.
    engine = RemoteEngine([a.url, b.url], token=TOKEN, health_interval_s=0.1)
    back = stand_in(port=a.port, answer="a again")
    await engine.start()
    try:
        await _until(engine.ready)
        back.stop()
        await _until(lambda: not engine.ready())
        again = stand_in(port=b.port, answer="b again")
        await _until(engine.ready)
        assert await _answer(engine) == "b again" and len(again.engine.requests) == 1
    finally:
        await engine.stop()


async def test_an_engine_serving_another_model_is_left_out(stand_in) -> None:
    a, other = stand_in(answer="from a"), stand_in(model_name="some-other-model")
    a.engine.hold = threading.Event()
    engine = RemoteEngine([a.url, other.url], token=TOKEN, health_interval_s=0.1)
    await engine.start()
    try:
        await _until(lambda: all(b.info is not None for b in engine._backends))
        # Both requests stay on A although it is busy and the other engine is idle: that one serves another model.
        both = [asyncio.create_task(_answer(engine)) for _ in range(2)]
        await _until(lambda: len(a.engine.requests) == 2, timeout=10)
        a.engine.hold.set()
        assert await asyncio.gather(*both) == ["from a", "from a"]
        assert other.engine.requests == [] and engine.model_name == a.engine.model_name
    finally:
        await engine.stop()


async def test_gateways_sharing_redis_count_each_others_requests(stand_in, tmp_path: Path) -> None:
    """Two gateways, two engines, one Redis: the second gateway's request goes to the engine the first one is not
    keeping busy (on its own counts both engines are idle and it would pick the first listed, which holds)."""
    a, b = stand_in(answer="from a"), stand_in(answer="from b")
    a.engine.hold = threading.Event()
    redis = RedisServer(tmp_path)  # its own server: this test stops it
    redis.start()
    states = [create_state(redis.url, namespace="routing") for _ in range(2)]
    assert all(isinstance(st, RedisState) for st in states)
    one, two = (RemoteEngine([a.url, b.url], token=TOKEN, health_interval_s=0.2, load=st.engines) for st in states)
    try:
        for gateway in (one, two):
            await gateway.start()
            await _until(gateway.ready)
        held = asyncio.create_task(_answer(one))  # a tie: the first listed, A
        await _until(lambda: len(a.engine.requests) == 1)
        assert await states[1].engines.totals([a.url, b.url]) == {a.url: 1, b.url: 0}
        assert await _answer(two) == "from b"
        # Redis goes away: routing falls back to each gateway's own counts instead of failing the request.
        redis.stop()
        assert await _answer(one) == "from b"  # its own request holds A
        a.engine.hold.set()
        assert await held == "from a"
        assert await _answer(two) == "from a"  # on its own counts both are idle: the first listed
        # Back: the counts are shared again (each gateway's next report rewrites its own).
        redis.start()
        a.engine.hold = threading.Event()
        held = asyncio.create_task(_answer(two))
        await _until(lambda: len(a.engine.requests) == 3)
        assert await _answer(one) == "from b"
        a.engine.hold.set()
        assert await held == "from a"
    finally:
        if a.engine.hold is not None:
            a.engine.hold.set()
        for gateway in (one, two):
            await gateway.stop()
        for st in states:
            await st.close()
        redis.stop()


def test_a_split_mode_gateway_routes_on_its_states_counts(stand_in, redis_server, tmp_path: Path) -> None:
    a = stand_in()
    settings = Settings(
        data_dir=tmp_path,
        decode_workers=1,
        job_workers=0,
        engine_url=a.url,
        engine_api_token=TOKEN,
        redis_url=redis_server.url,
        redis_namespace="routing-app",
    )
    with TestClient(create_app(settings)) as client:
        app = client.app.state  # type: ignore[attr-defined]
        assert isinstance(app.engine, RemoteEngine) and app.engine.load is app.state.engines
        # Another gateway on the same Redis holds 3 requests on the engine: this one's /metrics shows them.
        other = create_state(redis_server.url, namespace="routing-app")
        try:
            client.portal.call(other.engines.report, {a.url: 3})  # type: ignore[union-attr]
            metrics = client.get("/metrics").text
            assert f'videoqa_engine_outstanding_requests{{engine="{a.url}"}} 3.0' in metrics, metrics[-2000:]
        finally:
            client.portal.call(other.close)  # type: ignore[union-attr]


def test_readyz_waits_for_the_tokenizer_from_the_engine(stand_in, tmp_path: Path, monkeypatch) -> None:
    """Split mode without --model: the engine is up before the gateway has its tokenizer (fetched from the engine);
    until then it cannot build a prompt, so it must not say it is ready (a load balancer would send traffic)."""
    server = stand_in()
    fetched = threading.Event()
    real = RemoteEngine.tokenizer

    async def slow_tokenizer(self: RemoteEngine) -> object:
        await asyncio.to_thread(fetched.wait, 60)
        return await real(self)

    monkeypatch.setattr(RemoteEngine, "tokenizer", slow_tokenizer)
    remote = RemoteEngine(server.url, token=TOKEN, health_interval_s=0.05)
    settings = Settings(data_dir=tmp_path, decode_workers=1, job_workers=0)
    with TestClient(create_app(settings, engine=remote)) as client:
        deadline = time.monotonic() + 60
        try:
            while not remote.ready():
                assert time.monotonic() < deadline
                time.sleep(0.02)
            r = client.get("/readyz")
            assert r.status_code == 503 and r.json()["engine"] is False
        finally:
            fetched.set()  # else the app's shutdown waits for the stalled fetch
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200


def test_a_gateway_whose_engine_went_away_answers_503_with_retry_after(stand_in, tmp_path: Path) -> None:
    server = stand_in()
    remote = RemoteEngine(server.url, token=TOKEN, health_interval_s=3600)  # no health check will notice
    settings = Settings(data_dir=tmp_path, decode_workers=1, job_workers=0)
    with TestClient(create_app(settings, engine=remote), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        first = client.post("/v1/chat/completions", json=chat)
        assert first.status_code == 200, first.text
        server.stop()
        r = client.post("/v1/chat/completions", json=chat)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "engine_unavailable" and int(r.headers["retry-after"]) >= 1
