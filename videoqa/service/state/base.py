"""The state contract: one typed Protocol per concern, the records they exchange, and the one outage error.

Every backend (in-process in memory.py, Redis in redis_*.py, rate limits in rates.py) implements these
Protocols with the same behaviour; tests/service/test_state.py runs each behaviour against both.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, get_args

from videoqa.service.tenants import ANONYMOUS

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


class StateUnavailableError(RuntimeError):
    """The shared store is unreachable for an operation that must not be faked (jobs): HTTP 503."""

    retry_after_s = 1
    """Outages are detected and left per request (no breaker cooldown), so a short retry is right."""


@dataclass
class RateDecision:
    allowed: bool
    remaining: int
    retry_after_s: float
    """0 when allowed; else seconds until one more request fits in the window."""
    limit: int = 0
    reset_after_s: float = 0.0
    """Seconds until the window has room for its whole limit again (the RateLimit-Reset header)."""


@dataclass
class JobRecord:
    id: str
    status: str  # one of JOB_STATUSES
    payload: dict[str, Any]
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    worker: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    tenant: str = ANONYMOUS
    deferrals: int = 0
    """Times the job was put back because the engine was busy (these cost no attempt)."""
    not_before: float = 0.0
    """A queued job is not handed out before this time (retry backoff); 0 = at once."""

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        for private in ("worker", "deferrals", "not_before"):
            d.pop(private)
        return d


class FrameCache(Protocol):
    """Decoded frames by key. Never raises for an outage: a miss, or a skipped store."""

    hits: int
    misses: int

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: float | None) -> None: ...


class FileRegistry(Protocol):
    """Per-tenant registry of uploaded videos (the bytes on disk are shared, named by content hash)."""

    async def put(self, file_id: str, meta: dict[str, Any], tenant: str = ANONYMOUS) -> None: ...
    async def get(self, file_id: str, tenant: str = ANONYMOUS) -> dict[str, Any] | None: ...
    async def delete(self, file_id: str, tenant: str = ANONYMOUS) -> bool: ...
    async def in_use(self, file_id: str) -> bool:
        """Whether any tenant still has this content registered (its bytes must stay on disk)."""
        ...


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_s: float) -> RateDecision: ...


class JobQueue(Protocol):
    """At-least-once job queue with leases (docs/state.md). Raises StateUnavailableError during an outage."""

    async def submit(self, job_id: str, payload: dict[str, Any], tenant: str = ANONYMOUS) -> JobRecord: ...
    async def claim(self, worker_id: str, lease_s: float) -> JobRecord | None: ...
    async def heartbeat(self, job_id: str, worker_id: str, lease_s: float) -> bool: ...
    async def complete(self, job_id: str, worker_id: str, result: dict[str, Any]) -> bool: ...
    async def fail(
        self, job_id: str, worker_id: str, error: dict[str, Any], retry: bool, delay_s: float = 0.0
    ) -> bool: ...
    async def defer(self, job_id: str, worker_id: str, delay_s: float) -> bool:
        """Put a running job back (engine busy) for `delay_s` without counting the attempt."""
        ...

    async def get(self, job_id: str) -> JobRecord | None: ...
    async def list(self, tenant: str | None, status: str | None = None, limit: int = 100) -> list[JobRecord]: ...
    async def cancel(self, job_id: str) -> JobRecord | None: ...
    async def requeue_expired(self) -> int: ...
    async def counts(self) -> dict[str, int]:
        """The backlog: {"queued", "delayed", "running"} on every backend (delayed: waiting out a backoff)."""
        ...


class EngineLoad(Protocol):
    """Requests outstanding on each engine (split mode), counted across every gateway that shares this state, so
    least-outstanding routing sees the other gateways' requests too. Engines are named by their URL as configured
    (gateways sharing a Redis list them the same way). Each gateway writes only its own counts; a gateway that
    stops reporting (killed) drops out of the totals after `ttl_s`."""

    async def acquire(self, candidates: Sequence[str], own: Mapping[str, int]) -> tuple[str, int]:
        """Atomically pick the candidate with the fewest outstanding requests over all live gateways (ties: the
        first listed), and count one more request of this gateway on it. `own`: this gateway's exact counts
        before the pick (so a gateway picks one request at a time). Returns the engine and the total it had."""
        ...

    async def report(self, own: Mapping[str, int]) -> None:
        """This gateway's exact counts (after a request ends, and on every health tick: also its heartbeat)."""
        ...

    async def totals(self, engines: Sequence[str]) -> dict[str, int]:
        """Outstanding requests per engine over all live gateways."""
        ...
