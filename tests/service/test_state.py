"""Both state backends (in-process and a real redis-server) behave the same: frame cache, file registry, rate
limits and the at-least-once job queue; the Redis backend survives an outage and recovers."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from tests.utils.redis_server import RedisServer
from videoqa.service.fetch import FetchOptions
from videoqa.service.filestore import FileStore
from videoqa.service.protocol import VideoSource
from videoqa.service.settings import Settings
from videoqa.service.state import RedisState, State, StateUnavailableError, build_state, create_state


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[State]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        # A fresh namespace per test keeps tests independent on the shared server.
        st = create_state(server.url, namespace=f"t{uuid.uuid4().hex[:8]}", max_attempts=3)
    else:
        st = create_state(None, max_attempts=3)
    assert st.backend == request.param
    yield st
    await st.close()


async def _wait_until(cond, timeout: float) -> None:  # noqa: ANN001
    """Poll the async predicate `cond` until it holds; fail after `timeout` seconds (a deadline, not a bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not met in time")


async def test_ping_and_health(state: State) -> None:
    assert await state.ping() is True
    assert state.healthy()


async def test_cache_hit_miss_and_ttl(state: State) -> None:
    assert await state.cache_get("k") is None
    await state.cache_set("k", b"\x00frames\xff", ttl_s=None)
    await state.cache_set("short", b"gone soon", ttl_s=0.3)
    assert await state.cache_get("k") == b"\x00frames\xff"
    assert await state.cache_get("short") == b"gone soon"
    assert (state.cache_hits, state.cache_misses) == (2, 1)

    async def short_expired() -> bool:
        return await state.cache_get("short") is None

    await _wait_until(short_expired, timeout=10)  # a sub-second TTL expires (not rounded down to "forever")
    hits = state.cache_hits
    assert await state.cache_get("k") == b"\x00frames\xff"
    assert state.cache_hits == hits + 1


async def test_cache_skips_values_over_the_size_cap(request: pytest.FixtureRequest) -> None:
    server: RedisServer = request.getfixturevalue("redis_server")
    for st in (
        create_state(None, cache_max_bytes=100, cache_capacity_bytes=1000),
        create_state(server.url, namespace=f"t{uuid.uuid4().hex[:8]}", cache_max_bytes=100),
    ):
        await st.cache_set("small", b"x" * 100, ttl_s=60)
        await st.cache_set("huge", b"x" * 101, ttl_s=60)  # skipped, not an error
        assert await st.cache_get("small") == b"x" * 100
        assert await st.cache_get("huge") is None
        await st.close()


async def test_memory_cache_evicts_least_recently_used() -> None:
    st = create_state(None, cache_max_bytes=400, cache_capacity_bytes=1000)
    for key in "abc":
        await st.cache_set(key, key.encode() * 400, ttl_s=None)  # 1200 bytes offered, 1000 fit
    assert await st.cache_get("a") is None  # oldest went first
    assert await st.cache_get("b") is not None  # b is now the most recently used
    await st.cache_set("d", b"d" * 400, ttl_s=None)
    assert await st.cache_get("c") is None
    assert await st.cache_get("b") == b"b" * 400 and await st.cache_get("d") == b"d" * 400


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1, got 0"),
        ({"cache_max_bytes": 0}, "cache_max_bytes"),
        ({"cache_max_bytes": 10, "cache_capacity_bytes": 5}, "cache_capacity_bytes"),
    ],
)
def test_bad_settings_name_the_value(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_state(None, **kwargs)


async def test_file_registry(state: State) -> None:
    meta = {"id": "file-1", "bytes": 123, "filename": "clip.mp4", "sha256": "ab" * 32}
    assert await state.file_get("file-1") is None
    await state.file_put("file-1", meta)
    assert await state.file_get("file-1") == meta
    assert await state.file_delete("file-1") is True
    assert await state.file_get("file-1") is None
    assert await state.file_delete("file-1") is False


async def test_file_registry_is_per_tenant(state: State) -> None:
    meta = {"id": "f", "bytes": 1}
    await state.file_put("f", meta, tenant="alice")
    assert await state.file_get("f", tenant="bob") is None  # same content id, another tenant: not visible
    assert await state.file_delete("f", tenant="bob") is False
    await state.file_put("f", meta, tenant="bob")
    assert await state.file_delete("f", tenant="alice") is True
    assert await state.file_get("f", tenant="alice") is None
    assert await state.file_get("f", tenant="bob") == meta  # alice's delete leaves bob's entry...
    assert await state.file_in_use("f") is True  # ...and so the shared bytes
    assert await state.file_delete("f", tenant="bob") is True
    assert await state.file_in_use("f") is False


async def test_jobs_list_per_tenant_and_cancel(state: State) -> None:
    await state.job_submit("a1", {"i": 1}, tenant="alice")
    await state.job_submit("b1", {"i": 2}, tenant="bob")
    await state.job_submit("a2", {"i": 3}, tenant="alice")
    assert (await state.job_get("b1")).tenant == "bob"  # type: ignore[union-attr]
    assert [j.id for j in await state.job_list("alice")] == ["a2", "a1"]  # newest first, only alice's
    assert [j.id for j in await state.job_list("bob")] == ["b1"]
    assert {j.id for j in await state.job_list(None)} == {"a1", "a2", "b1"}  # operators: everyone's
    assert [j.id for j in await state.job_list(None, limit=2)] == ["a2", "b1"]

    claimed = await state.job_claim("w1", lease_s=30)  # a1: the oldest
    assert claimed is not None and claimed.id == "a1"
    assert (await state.job_cancel("a1")).status == "cancelled"  # type: ignore[union-attr]  # running
    assert (await state.job_cancel("b1")).status == "cancelled"  # type: ignore[union-attr]  # queued
    assert await state.job_cancel("missing") is None
    assert not await state.job_heartbeat("a1", "w1", 30)  # the worker lost its lease
    assert not await state.job_complete("a1", "w1", {"answer": "late"})  # its late result is refused
    assert (await state.job_get("a1")).status == "cancelled"  # type: ignore[union-attr]
    nxt = await state.job_claim("w1", lease_s=30)
    assert nxt is not None and nxt.id == "a2"  # b1 left the queue
    assert await state.job_claim("w1", lease_s=30) is None
    await state.job_complete("a2", "w1", {"answer": "x"})
    assert (await state.job_cancel("a2")).status == "succeeded"  # type: ignore[union-attr]  # finished: unchanged
    assert [j.id for j in await state.job_list("alice", status="cancelled")] == ["a1"]
    assert await state.job_requeue_expired() == 0  # a cancelled job's lease is gone: never requeued


async def _burst(state: State, n: int, limit: int, window_s: float) -> list:
    """n hits on a fresh key, all inside one window: a burst that straddled a window edge is redone on a new
    key, so the test does not depend on where in the window it starts."""
    while True:
        key, start = f"user-{uuid.uuid4().hex[:8]}", time.time() // window_s
        decisions = [await state.rate_hit(key, limit=limit, window_s=window_s) for _ in range(n)]
        if time.time() // window_s == start:
            return decisions


async def test_rate_limit_denies_over_limit_with_retry_after(state: State) -> None:
    decisions = await _burst(state, 5, limit=3, window_s=30)
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert all(d.retry_after_s == 0.0 for d in decisions[:3])
    # retry_after is the time to the end of the current window: positive and at most one window.
    assert all(0.0 < d.retry_after_s <= 30.0 for d in decisions[3:])
    other = await state.rate_hit("user-b", limit=3, window_s=30)
    assert other.allowed and other.remaining == 2  # keys are independent


async def test_rate_limit_window_resets(state: State) -> None:
    while True:  # both hits in one window (see _burst), then the same key again until the window turns over
        key, start = f"burst-{uuid.uuid4().hex[:8]}", time.time() // 1
        first, denied = [await state.rate_hit(key, limit=1, window_s=1) for _ in range(2)]
        if time.time() // 1 == start:
            break
    assert first.allowed and not denied.allowed and 0.0 < denied.retry_after_s <= 1.0

    async def allowed_again() -> bool:
        return (await state.rate_hit(key, limit=1, window_s=1)).allowed

    await _wait_until(allowed_again, timeout=10)


async def test_submit_is_idempotent_and_claim_runs_once(state: State) -> None:
    first = await state.job_submit("job-1", {"q": "what happens?"})
    again = await state.job_submit("job-1", {"q": "a different payload is ignored"})
    assert first.status == again.status == "queued"
    assert again.payload == {"q": "what happens?"} and again.attempts == 0
    claimed = await state.job_claim("w1", lease_s=30)
    assert claimed is not None and claimed.id == "job-1"
    assert claimed.status == "running" and claimed.attempts == 1 and claimed.worker == "w1"
    assert await state.job_claim("w2", lease_s=30) is None  # submitted twice, queued once


async def test_jobs_are_claimed_in_submission_order(state: State) -> None:
    for i in range(3):
        await state.job_submit(f"order-{i}", {"i": i})
    ids = [(await state.job_claim("w", 30)).id for _ in range(3)]  # type: ignore[union-attr]
    assert ids == ["order-0", "order-1", "order-2"]


async def test_first_result_wins(state: State) -> None:
    await state.job_submit("job-r", {})
    await state.job_claim("w1", lease_s=30)
    await state.job_complete("job-r", "w1", {"answer": "first"})
    await state.job_complete("job-r", "w1", {"answer": "second"})
    await state.job_fail("job-r", "w1", {"message": "late failure"}, retry=True)
    job = await state.job_get("job-r")
    assert job is not None and job.status == "succeeded"
    assert job.result == {"answer": "first"} and job.error is None
    assert await state.job_claim("w2", 30) is None  # a completed job is never handed out again
    assert await state.job_get("missing") is None


async def test_fail_retries_until_max_attempts(state: State) -> None:
    await state.job_submit("job-f", {})
    for attempt in (1, 2, 3):
        job = await state.job_claim(f"w{attempt}", lease_s=30)
        assert job is not None and job.id == "job-f" and job.attempts == attempt
        await state.job_fail("job-f", f"w{attempt}", {"message": f"boom {attempt}"}, retry=True)
    job = await state.job_get("job-f")
    assert job is not None and job.status == "failed" and job.error == {"message": "boom 3"}
    assert await state.job_claim("w4", 30) is None


async def test_fail_without_retry_is_final(state: State) -> None:
    await state.job_submit("job-4xx", {})
    await state.job_claim("w1", 30)
    await state.job_fail("job-4xx", "w1", {"message": "bad video"}, retry=False)
    job = await state.job_get("job-4xx")
    assert job is not None and job.status == "failed" and job.attempts == 1
    assert await state.job_claim("w2", 30) is None


async def test_dead_worker_job_is_redelivered_and_completed_once(state: State) -> None:
    await state.job_submit("job-d", {"video": "v"})
    dead = await state.job_claim("dead-worker", lease_s=0.3)
    assert dead is not None
    assert await state.job_requeue_expired() == 0  # lease still valid

    async def requeued() -> bool:  # the worker "dies": no heartbeat, the lease runs out
        return await state.job_requeue_expired() == 1

    await _wait_until(requeued, timeout=10)
    assert (await state.job_get("job-d")).status == "queued"  # type: ignore[union-attr]
    assert await state.job_heartbeat("job-d", "dead-worker", 30) is False  # the lost lease is not revived
    live = await state.job_claim("live-worker", lease_s=30)
    assert live is not None and live.id == "job-d" and live.attempts == 2
    await state.job_complete("job-d", "live-worker", {"answer": "done"})
    # The dead worker comes back late with its own answer: ignored, first result wins.
    await state.job_complete("job-d", "dead-worker", {"answer": "stale"})
    job = await state.job_get("job-d")
    assert job is not None and job.status == "succeeded" and job.result == {"answer": "done"}
    assert await state.job_requeue_expired() == 0
    assert await state.job_claim("w3", 30) is None


async def test_late_report_from_a_lapsed_lease_is_refused(state: State) -> None:
    """A worker whose lease lapsed (job requeued and claimed by another worker) reports late: its failure must
    not requeue the job a second time (double delivery) nor drop the new owner's lease; its result and
    heartbeat are refused too."""
    await state.job_submit("job-o", {})
    assert (await state.job_claim("worker-a", lease_s=-1)) is not None  # a lease that has already lapsed
    assert await state.job_requeue_expired() == 1
    b = await state.job_claim("worker-b", lease_s=30)
    assert b is not None and b.id == "job-o" and b.attempts == 2

    assert await state.job_fail("job-o", "worker-a", {"message": "late"}, retry=True) is False
    assert await state.job_complete("job-o", "worker-a", {"answer": "stale"}) is False
    assert await state.job_heartbeat("job-o", "worker-a", 30) is False
    job = await state.job_get("job-o")
    assert job is not None and (job.status, job.worker, job.error, job.result) == ("running", "worker-b", None, None)
    assert await state.job_claim("worker-c", lease_s=30) is None  # not queued a second time
    assert await state.job_counts() == {"queued": 0, "delayed": 0, "running": 1}  # same keys on both backends
    assert await state.job_requeue_expired() == 0  # worker B's lease is intact
    assert await state.job_heartbeat("job-o", "worker-b", 30) is True

    assert await state.job_complete("job-o", "worker-b", {"answer": "done"}) is True
    job = await state.job_get("job-o")
    assert job is not None and job.status == "succeeded" and job.result == {"answer": "done"}


async def test_late_failure_of_a_requeued_job_does_not_queue_it_twice(state: State) -> None:
    await state.job_submit("job-q", {})
    assert (await state.job_claim("worker-a", lease_s=-1)) is not None
    assert await state.job_requeue_expired() == 1  # back in the queue, nobody holds it
    assert await state.job_fail("job-q", "worker-a", {"message": "late"}, retry=True) is False
    assert await state.job_fail("job-q", "worker-a", {"message": "late"}, retry=False) is False
    job = await state.job_get("job-q")
    assert job is not None and job.status == "queued" and job.error is None
    assert (await state.job_claim("worker-b", lease_s=30)) is not None
    assert await state.job_claim("worker-c", lease_s=30) is None  # delivered once


async def test_heartbeat_keeps_the_lease(state: State) -> None:
    await state.job_submit("job-h", {})
    await state.job_claim("w1", lease_s=-1)  # a lease already run out, not yet requeued
    assert await state.job_heartbeat("job-h", "someone-else", 30) is False
    assert await state.job_heartbeat("job-h", "w1", 30) is True  # renewed just in time
    assert await state.job_requeue_expired() == 0
    assert (await state.job_get("job-h")).status == "running"  # type: ignore[union-attr]
    assert await state.job_heartbeat("job-h", "w1", -1) is True  # a renewal sets the lease, not max(old, new)
    assert await state.job_requeue_expired() == 1


async def test_lease_lost_too_often_fails_the_job(state: State) -> None:
    await state.job_submit("job-x", {})
    for attempt in (1, 2, 3):
        assert (await state.job_claim(f"w{attempt}", lease_s=-1)) is not None  # the lease has already run out
        assert await state.job_requeue_expired() == 1
    job = await state.job_get("job-x")
    assert job is not None and job.status == "failed" and job.attempts == 3
    assert job.error == {"message": "worker lost too many times"}


async def test_concurrent_claims_never_share_a_job(state: State) -> None:
    n_jobs, n_workers = 40, 8
    for i in range(n_jobs):
        await state.job_submit(f"c-{i}", {"i": i})
    claimed: dict[str, list[str]] = {}

    async def worker(name: str) -> None:
        while (job := await state.job_claim(name, lease_s=30)) is not None:
            claimed.setdefault(job.id, []).append(name)
            await asyncio.sleep(0)  # let the other workers interleave

    await asyncio.gather(*(worker(f"w{i}") for i in range(n_workers)))
    assert sorted(claimed) == sorted(f"c-{i}" for i in range(n_jobs))
    assert all(len(owners) == 1 for owners in claimed.values()), claimed
    assert len({o[0] for o in claimed.values()}) > 1  # the work really was spread over several workers


# --------------------------------------------------------------------------------------------------------
# Redis outage: a private server, so stopping it does not disturb other tests sharing the session one
# --------------------------------------------------------------------------------------------------------


async def test_redis_outage_degrades_and_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path)
    server.start()
    st = create_state(server.url, namespace="outage")
    assert isinstance(st, RedisState)
    try:
        await st.cache_set("frames", b"abc", ttl_s=60)
        await st.file_put("file-1", {"id": "file-1"})
        await st.job_submit("before", {})
        assert await st.cache_get("frames") == b"abc"

        server.stop()  # Redis goes away mid-test
        assert await st.cache_get("frames") is None  # an outage is a miss, not an exception
        await st.cache_set("frames", b"new", ttl_s=60)  # silently skipped
        assert await st.file_get("file-1") == {"id": "file-1"}  # this gateway's own copy
        limited = [await st.rate_hit("u", limit=2, window_s=30) for _ in range(3)]
        assert [d.allowed for d in limited] == [True, True, False]  # local limiter still enforces limits
        with pytest.raises(StateUnavailableError):
            await st.job_submit("during", {})  # accepted work is never silently dropped
        with pytest.raises(StateUnavailableError):
            await st.job_claim("w", 30)
        assert await st.ping() is False
        assert not st.healthy()
        assert any("unreachable" in r.getMessage() for r in caplog.records)

        server.start()  # same port, empty (no persistence)
        # The very first call after Redis is back succeeds: no cooldown to sit out, no stale pooled connection
        # (nothing here waits or pings first).
        job = await st.job_submit("after", {"q": 1})
        assert job.status == "queued"
        assert st.healthy()
        assert any("is back" in r.getMessage() for r in caplog.records)
        assert await st.file_get("file-1") == {"id": "file-1"}  # re-registered from the local copy
        claimed = await st.job_claim("w", 30)
        assert claimed is not None and claimed.id == "after"
        await st.cache_set("frames", b"again", ttl_s=60)
        assert await st.cache_get("frames") == b"again"
    finally:
        await st.close()
        server.stop()


async def test_a_file_another_gateway_registered_is_unavailable_not_missing_during_an_outage(tmp_path: Path) -> None:
    # Found by benchmarks/bench_chaos.py: while Redis was down, a gateway that did not hold the upload itself (the
    # other gateway's, or its own before a restart) answered 404 file_not_found, telling clients to upload again.
    server = RedisServer(tmp_path)
    server.start()
    here, there = create_state(server.url, namespace="outage-files"), create_state(server.url, namespace="outage-files")
    try:
        await there.file_put("file-there", {"id": "file-there"})
        await here.file_put("file-here", {"id": "file-here"})
        assert await here.file_get("file-there") == {"id": "file-there"}
        server.stop()
        with pytest.raises(StateUnavailableError):  # HTTP 503 + Retry-After, not 404: it may exist
            await here.file_get("file-there")
        assert await here.file_get("file-here") == {"id": "file-here"}  # its own copy still serves
    finally:
        await here.close()
        await there.close()
        server.stop()


async def test_a_fetched_video_is_registered_locally_during_an_outage(tmp_path: Path) -> None:
    """The URL path asks the registry whether the fetched content is known; during an outage it registers the bytes
    it holds (locally) instead of failing with the outage error."""
    server = RedisServer(tmp_path)
    server.start()
    st = create_state(server.url, namespace="outage-fetch")
    info = {"bytes": 18, "duration": 1.0, "width": 64, "height": 48, "fps": 10.0, "codec": "h264", "container": "mp4"}
    info |= {"num_frames": 10, "has_audio": False}
    probed = SimpleNamespace(public=lambda: info, keyframes=[0.0])  # the decoder is not under test
    pool = SimpleNamespace(probe=lambda path: asyncio.sleep(0, probed))
    store = FileStore(tmp_path / "data", st.files, pool, FetchOptions())  # type: ignore[arg-type]
    try:
        server.stop()
        url = "data:video/mp4;base64," + base64.b64encode(b"not really a video").decode()
        path, meta = await store.resolve(VideoSource(video_url=url), "anonymous")
        assert path.read_bytes() == b"not really a video" and meta["duration"] == 1.0
    finally:
        await st.close()
        server.stop()


# --------------------------------------------------------------------------------------------------------
# Settings -> backends (factory), retry backoff, busy deferral, record TTLs, bounded rate-limit memory
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_frame_cache_entry_cap_over_64_mib_is_honoured(backend: str, request: pytest.FixtureRequest) -> None:
    big = 64 * 1024**2 + 1  # over the old hard-coded cap
    redis_url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    settings = Settings(
        redis_url=redis_url,
        redis_namespace=f"t{uuid.uuid4().hex[:8]}",
        frame_cache_max_bytes=big,
        frame_cache_capacity_bytes=2 * big,
    )
    st = build_state(settings)
    try:
        await st.cache_set("big", b"x" * big, ttl_s=60)
        assert await st.cache_get("big") == b"x" * big
    finally:
        await st.close()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"frame_cache_max_bytes": 2 * 1024**3}, "over VIDEOQA_FRAME_CACHE_CAPACITY_BYTES"),
        ({"frame_cache_max_bytes": 600 * 1024**2, "redis_url": "redis://127.0.0.1:1/0"}, "proto-max-bulk-len"),
    ],
)
def test_frame_cache_caps_that_cannot_be_honoured_are_refused_at_start(settings: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings(**settings)


async def test_state_settings_reach_the_redis_backend(redis_server: RedisServer) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        redis_url=redis_server.url,
        redis_namespace=ns,
        job_max_attempts=1,
        job_result_ttl_s=1000,
        job_failed_ttl_s=2000,
    )
    st = build_state(settings)
    raw = Redis.from_url(redis_server.url)
    try:
        for job_id in ("ok", "bad"):
            await st.job_submit(job_id, {})
        assert await raw.llen(f"{ns}:jobs:queue") == 2  # the namespace
        await st.job_claim("w", 30)
        await st.job_complete("ok", "w", {"answer": "a"})
        await st.job_claim("w", 30)
        await st.job_fail("bad", "w", {"message": "boom"}, retry=True)  # one attempt allowed: failed for good
        assert (await st.job_get("bad")).status == "failed"  # type: ignore[union-attr]
        assert 990 <= await raw.ttl(f"{ns}:job:ok") <= 1000
        assert 1990 <= await raw.ttl(f"{ns}:job:bad") <= 2000
    finally:
        await raw.aclose()
        await st.close()


async def test_finished_records_expire_in_memory() -> None:
    st = create_state(None, result_ttl_s=0.2, failed_ttl_s=3600)  # type: ignore[arg-type]
    for job_id in ("done", "broken", "waiting"):
        await st.job_submit(job_id, {})
    await st.job_claim("w", 30)
    await st.job_complete("done", "w", {})
    await st.job_claim("w", 30)
    await st.job_fail("broken", "w", {"message": "bad input"}, retry=False)

    async def done_gone() -> bool:
        return await st.job_get("done") is None

    await _wait_until(done_gone, timeout=10)
    assert (await st.job_get("broken")).status == "failed"  # type: ignore[union-attr]  # its own, longer TTL
    assert (await st.job_get("waiting")).status == "queued"  # type: ignore[union-attr]  # unfinished: kept
    assert [j.id for j in await st.job_list(None)] == ["waiting", "broken"]


async def test_busy_deferral_waits_out_its_delay_and_costs_no_attempt(state: State) -> None:
    await state.job_submit("job-busy", {})
    for _ in range(5):  # more deferrals than max_attempts (3): being busy never fails a job
        job = await state.job_claim("w", lease_s=30)
        assert job is not None and job.id == "job-busy" and job.attempts == 1
        assert await state.job_defer("job-busy", "w", delay_s=0)
    assert await state.job_defer("job-busy", "w", delay_s=0) is False  # not running: nothing to defer
    job = await state.job_claim("w", lease_s=30)
    assert job is not None and job.deferrals == 5
    assert await state.job_defer("job-busy", "w", delay_s=30) is True
    assert await state.job_counts() == {"queued": 0, "delayed": 1, "running": 0}
    assert await state.job_claim("w", lease_s=30) is None  # still backing off
    record = await state.job_get("job-busy")
    assert record is not None and record.status == "queued" and record.attempts == 0
    assert record.not_before > time.time() + 20


async def test_retry_backoff_delays_the_next_delivery(state: State) -> None:
    await state.job_submit("job-b", {})
    await state.job_claim("w", lease_s=30)
    assert await state.job_fail("job-b", "w", {"message": "upstream 502"}, retry=True, delay_s=30)
    assert await state.job_claim("w", lease_s=30) is None  # not before its delay
    assert await state.job_counts() == {"queued": 0, "delayed": 1, "running": 0}
    assert (await state.job_get("job-b")).not_before > time.time() + 20  # type: ignore[union-attr]

    await state.job_submit("job-s", {})  # a short delay: handed out again once it is over
    await state.job_claim("w", lease_s=30)
    assert await state.job_fail("job-s", "w", {"message": "upstream 502"}, retry=True, delay_s=0.2)

    async def claimed() -> bool:
        job = await state.job_claim("w", lease_s=30)
        return job is not None and job.id == "job-s" and job.attempts == 2

    await _wait_until(claimed, timeout=10)


async def test_cancelling_a_backed_off_job_keeps_it_out_of_the_queue(state: State) -> None:
    await state.job_submit("job-c", {})
    await state.job_claim("w", lease_s=30)
    await state.job_defer("job-c", "w", delay_s=0.05)
    assert (await state.job_cancel("job-c")).status == "cancelled"  # type: ignore[union-attr]

    async def delay_over() -> bool:
        return time.time() > (await state.job_get("job-c")).not_before  # type: ignore[union-attr]

    await _wait_until(delay_over, timeout=10)
    assert await state.job_claim("w", lease_s=30) is None
    assert await state.job_counts() == {"queued": 0, "delayed": 0, "running": 0}


async def test_memory_rate_limits_forget_callers_once_their_window_passed() -> None:
    st = create_state(None)
    storage = st.rates.storage  # type: ignore[attr-defined]
    for i in range(200):  # 200 different callers, once each
        assert (await st.rate_hit(f"client-{i}", limit=5, window_s=1)).allowed

    async def swept() -> bool:
        await st.rate_hit("probe", limit=5, window_s=1)  # each hit schedules limits' sweep of expired entries
        await asyncio.sleep(0.05)
        return len(storage.events) <= 1

    await _wait_until(swept, timeout=10)


async def test_rate_decision_carries_the_header_values(state: State) -> None:
    key = f"h-{uuid.uuid4().hex[:8]}"
    first = await state.rate_hit(key, limit=2, window_s=30)
    assert (first.allowed, first.limit, first.remaining) == (True, 2, 1)
    assert 0 < first.reset_after_s <= 30
    await state.rate_hit(key, limit=2, window_s=30)
    denied = await state.rate_hit(key, limit=2, window_s=30)
    assert not denied.allowed and denied.remaining == 0
    # Moving window: the next request fits when the first hit (made just now) leaves the window.
    assert 25 < denied.retry_after_s <= 30


# --------------------------------------------------------------------------------------------------------
# Requests outstanding per engine, shared by the gateways (split mode's least-outstanding routing)
# --------------------------------------------------------------------------------------------------------


async def test_engine_load_counts_every_gateway_on_redis(redis_server: RedisServer) -> None:
    ns = f"load{uuid.uuid4().hex[:8]}"
    one, two = create_state(redis_server.url, namespace=ns), create_state(redis_server.url, namespace=ns)
    assert isinstance(one, RedisState) and isinstance(two, RedisState)
    a, b = "http://a:8000", "http://b:8000"
    try:
        assert await one.engines.acquire([a, b], {}) == (a, 0)  # a tie: the first listed
        # The second gateway has nothing outstanding itself, but sees the first one's request on A.
        assert await two.engines.acquire([a, b], {}) == (b, 0)
        assert await one.engines.totals([a, b]) == {a: 1, b: 1}
        assert await two.engines.acquire([a, b], {b: 1}) == (a, 1)  # ties again: the first listed
        await two.engines.report({a: 0, b: 0})  # its requests ended
        assert await one.engines.totals([a, b]) == {a: 1, b: 0}
        assert await one.engines.acquire([a, b], {a: 1}) == (b, 0)
    finally:
        await one.close()
        await two.close()


async def test_a_gateway_that_stops_reporting_leaves_the_totals(redis_server: RedisServer) -> None:
    ns = f"load{uuid.uuid4().hex[:8]}"
    gone, alive = create_state(redis_server.url, namespace=ns), create_state(redis_server.url, namespace=ns)
    assert isinstance(gone, RedisState) and isinstance(alive, RedisState)
    gone.engines.ttl_ms = alive.engines.ttl_ms = 300  # type: ignore[attr-defined]
    a, b = "http://a:8000", "http://b:8000"
    try:
        await gone.engines.report({a: 5})  # then it is killed: no more reports
        await alive.engines.report({})
        assert await alive.engines.totals([a, b]) == {a: 5, b: 0}

        async def forgotten() -> bool:
            await alive.engines.report({})  # the live gateway keeps reporting
            return (await alive.engines.totals([a, b]))[a] == 0

        await _wait_until(forgotten, timeout=10)
        assert await alive.engines.acquire([a, b], {}) == (a, 0)
    finally:
        await gone.close()
        await alive.close()


async def test_memory_engine_load_is_this_gateways_own_counts() -> None:
    st = create_state(None)
    a, b = "http://a:8000", "http://b:8000"
    assert await st.engines.acquire([a, b], {a: 2, b: 1}) == (b, 1)
    assert await st.engines.totals([a, b]) == {a: 2, b: 2}
    await st.engines.report({a: 0, b: 0})
    assert await st.engines.acquire([b, a], {}) == (b, 0)
