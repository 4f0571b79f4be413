"""The job worker's handling of outcomes, on the real in-process queue, without an engine: the generation step
(`service.ask`) is replaced by a stand-in that fails the way the gateway does (APIError 503 when busy, 4xx for a
bad request), since what is under test is what the worker does with each outcome. Also: the backlog metric."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from videoqa.service.app import create_app
from videoqa.service.errors import APIError
from videoqa.service.jobs_worker import backoff_s, run_worker
from videoqa.service.metrics import Metrics
from videoqa.service.protocol import Usage
from videoqa.service.serving import Answer
from videoqa.service.settings import Settings
from videoqa.service.state import State, StateUnavailableError, create_state
from videoqa.video.errors import CorruptVideoError

JOB = {"task": "caption", "file_id": "0" * 64, "max_tokens": 4}


class Scripted:
    """service.ask raising the given errors in turn, then answering."""

    def __init__(self, state: State, errors: list[Exception]) -> None:
        self.state, self.metrics, self.errors, self.calls = state, Metrics(), list(errors), 0
        self.engine = SimpleNamespace(ready=lambda: True)

    def ready(self) -> bool:
        return True

    async def ask(self, *args: Any, **kwargs: Any) -> Answer:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return Answer("a video", "stop", Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5), None)


@contextlib.asynccontextmanager
async def worker(service: Scripted) -> AsyncIterator[None]:
    task = asyncio.create_task(run_worker(service, 0, lease_s=30, poll_s=0.02))  # type: ignore[arg-type]
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _final(state: State, job_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await state.job_get(job_id)
        if job is not None and job.status in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not finish")


def _busy() -> APIError:
    return APIError(503, "server busy; retry shortly", "overloaded")


async def test_a_busy_engine_defers_the_job_without_using_attempts() -> None:
    state = create_state(None, max_attempts=2)
    service = Scripted(state, [_busy(), _busy(), _busy()])  # more busy answers than attempts
    await state.job_submit("j", JOB)
    async with worker(service):
        job = await _final(state, "j")
    assert job.status == "succeeded" and job.result["answer"] == "a video"
    assert job.attempts == 1 and job.deferrals == 3 and service.calls == 4
    assert service.metrics.jobs.labels("deferred")._value.get() == 3


async def test_a_client_error_is_final_and_a_server_error_is_retried() -> None:
    state = create_state(None, max_attempts=3)
    bad = Scripted(state, [APIError(404, "no file", "file_not_found")])
    await state.job_submit("bad", JOB)
    async with worker(bad):
        job = await _final(state, "bad")
    assert (job.status, job.attempts, job.error["code"], bad.calls) == ("failed", 1, "file_not_found", 1)

    flaky = Scripted(state, [APIError(502, "upstream failed", "upstream_error")])
    await state.job_submit("flaky", JOB)
    async with worker(flaky):
        job = await _final(state, "flaky")
    assert (job.status, job.attempts, flaky.calls) == ("succeeded", 2, 2)


@pytest.mark.parametrize("final", [APIError(404, "no file", "file_not_found"), CorruptVideoError("truncated")])
async def test_an_outage_while_failing_a_job_does_not_stop_the_worker(final: Exception) -> None:
    # The final-failure paths once let the outage error escape run_worker: the worker task ended silently and the
    # gateway never ran another job.
    state = create_state(None, max_attempts=3)
    service = Scripted(state, [final])
    real_fail, outages = state.job_fail, [StateUnavailableError("Redis is unreachable")]

    async def fail_during_outage(*args: Any, **kwargs: Any) -> bool:
        if outages:
            raise outages.pop()
        return await real_fail(*args, **kwargs)

    state.job_fail = fail_during_outage  # type: ignore[method-assign]
    await state.job_submit("unlucky", JOB)
    await state.job_submit("next", JOB)
    async with worker(service):
        job = await _final(state, "next")
    assert job.status == "succeeded"  # the same worker went on to the next job
    assert (await state.job_get("unlucky")).status == "running"  # unrecorded: its lease lapses, it is redone


async def test_an_outage_mid_job_defers_it_without_using_an_attempt() -> None:
    state = create_state(None, max_attempts=1)
    service = Scripted(state, [StateUnavailableError("Redis is unreachable")])  # e.g. the file lookup
    await state.job_submit("j", JOB)
    async with worker(service):
        job = await _final(state, "j")
    assert (job.status, job.attempts, job.deferrals, service.calls) == ("succeeded", 1, 1, 2)


def test_backoff_grows_and_is_capped() -> None:
    assert 0.25 <= backoff_s(0) <= 0.5 and 0.25 <= backoff_s(1) <= 0.5
    assert 2.0 <= backoff_s(4) <= 4.0
    assert all(15.0 <= backoff_s(50) <= 30.0 for _ in range(20))


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_metrics_show_the_job_backlog_by_state(backend: str, request: pytest.FixtureRequest) -> None:
    import uuid

    url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    state = create_state(url, namespace=f"t{uuid.uuid4().hex[:8]}")
    for i in range(3):
        await state.job_submit(f"m{i}", {})
    await state.job_claim("w", 30)
    await state.job_claim("w", 30)
    await state.job_defer("m1", "w", delay_s=60)
    app = create_app(Settings())
    # Only what /metrics reads (no lifespan, so no engine is started).
    app.state.metrics, app.state.state = Metrics(), state
    app.state.engine = SimpleNamespace(queue_depth=lambda: 0)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as client:
            text = (await client.get("/metrics")).text
    finally:
        await state.close()
    for name, count in (("queued", 1), ("delayed", 1), ("running", 1)):
        assert f'videoqa_job_backlog{{state="{name}"}} {count}.0' in text
