"""In-process backends (one gateway): frame cache (LRU, bounded), file registry, job queue.

Same behaviour as the Redis backends (tests/service/test_state.py runs every behaviour against both), including
lease ownership: only the worker holding a job's current lease may renew, complete, fail or defer it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from videoqa.service.state.base import FINAL_STATUSES, JobRecord
from videoqa.service.tenants import ANONYMOUS

log = logging.getLogger(__name__)

LOST_TOO_OFTEN = {"message": "worker lost too many times"}


class MemoryFrameCache:
    def __init__(self, max_bytes: int, capacity_bytes: int) -> None:
        if not 0 < max_bytes <= capacity_bytes:
            raise ValueError(f"need 0 < cache_max_bytes ({max_bytes}) <= cache_capacity_bytes ({capacity_bytes})")
        self.max_bytes, self.capacity_bytes = max_bytes, capacity_bytes
        # LRU order: without a total bound every decoded video would stay in this process's memory forever.
        self._items: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None or (item[1] is not None and item[1] < time.time()):
            self._drop(key)
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    async def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if len(value) > self.max_bytes:
            log.debug("not caching %s: %d bytes > cache_max_bytes %d", key, len(value), self.max_bytes)
            return
        self._drop(key)
        self._items[key] = (value, time.time() + ttl_s if ttl_s else None)
        self._bytes += len(value)
        while self._bytes > self.capacity_bytes:
            self._drop(next(iter(self._items)))  # least recently used first

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(item[0])


class MemoryFiles:
    def __init__(self) -> None:
        self._files: dict[tuple[str, str], dict[str, Any]] = {}  # (tenant, file id) -> metadata

    async def put(self, file_id: str, meta: dict[str, Any], tenant: str = ANONYMOUS) -> None:
        self._files[(tenant, file_id)] = dict(meta)

    async def get(self, file_id: str, tenant: str = ANONYMOUS) -> dict[str, Any] | None:
        meta = self._files.get((tenant, file_id))
        return dict(meta) if meta is not None else None

    async def delete(self, file_id: str, tenant: str = ANONYMOUS) -> bool:
        return self._files.pop((tenant, file_id), None) is not None

    async def in_use(self, file_id: str) -> bool:
        return any(fid == file_id for _, fid in self._files)


class MemoryJobs:
    def __init__(self, max_attempts: int = 3, result_ttl_s: float = 7 * 86400, failed_ttl_s: float = 7 * 86400):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.max_attempts, self.result_ttl_s, self.failed_ttl_s = max_attempts, result_ttl_s, failed_ttl_s
        self._jobs: dict[str, JobRecord] = {}
        self._queue: list[str] = []  # claimed from the end: oldest last
        self._delayed: list[tuple[float, str]] = []  # heap of (not_before, id)
        self._leases: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []  # heap of (when the finished record goes, id)
        self._lock = asyncio.Lock()

    def _finish(self, job: JobRecord, status: str) -> None:
        job.status, job.updated = status, time.time()
        self._leases.pop(job.id, None)
        ttl = self.failed_ttl_s if status == "failed" else self.result_ttl_s
        heapq.heappush(self._expiry, (job.updated + ttl, job.id))

    def _prune(self) -> None:
        """Drop expired finished records: a heap, so each call costs only what it removes (not every job)."""
        now = time.time()
        while self._expiry and self._expiry[0][0] <= now:
            _, job_id = heapq.heappop(self._expiry)
            job = self._jobs.get(job_id)
            if job is not None and job.status in FINAL_STATUSES:
                del self._jobs[job_id]

    def _requeue(self, job: JobRecord, delay_s: float) -> None:
        job.status, job.updated = "queued", time.time()
        self._leases.pop(job.id, None)
        if delay_s > 0:
            job.not_before = job.updated + delay_s
            heapq.heappush(self._delayed, (job.not_before, job.id))
        else:
            job.not_before = 0.0
            self._queue.insert(0, job.id)

    def _promote_due(self) -> None:
        now = time.time()
        while self._delayed and self._delayed[0][0] <= now:
            _, job_id = heapq.heappop(self._delayed)
            job = self._jobs.get(job_id)
            if job is not None and job.status == "queued" and job.not_before and job.not_before <= now:
                job.not_before = 0.0
                self._queue.insert(0, job_id)

    def _owned(self, job_id: str, worker_id: str) -> JobRecord | None:
        """The job if `worker_id` holds its current lease (the Redis scripts' `owns` rule)."""
        job = self._jobs.get(job_id)
        if job is None or job.status != "running" or job.worker != worker_id or job_id not in self._leases:
            return None
        return job

    async def submit(self, job_id: str, payload: dict[str, Any], tenant: str = ANONYMOUS) -> JobRecord:
        async with self._lock:
            self._prune()
            if job_id not in self._jobs:
                self._jobs[job_id] = JobRecord(job_id, "queued", payload, tenant=tenant)
                self._queue.insert(0, job_id)
            return replace(self._jobs[job_id])

    async def claim(self, worker_id: str, lease_s: float) -> JobRecord | None:
        async with self._lock:
            self._promote_due()
            if not self._queue:
                return None
            job = self._jobs[self._queue.pop()]
            job.status, job.worker, job.updated = "running", worker_id, time.time()
            job.attempts += 1
            self._leases[job.id] = time.time() + lease_s
            return replace(job)

    async def heartbeat(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        async with self._lock:
            if self._owned(job_id, worker_id) is None:
                return False
            self._leases[job_id] = time.time() + lease_s
            return True

    async def complete(self, job_id: str, worker_id: str, result: dict[str, Any]) -> bool:
        async with self._lock:
            job = self._owned(job_id, worker_id)
            if job is None:
                return False  # finished already (first result wins) or the lease moved on
            job.result, job.error = result, None
            self._finish(job, "succeeded")
            return True

    async def fail(self, job_id: str, worker_id: str, error: dict[str, Any], retry: bool, delay_s: float = 0.0) -> bool:
        async with self._lock:
            job = self._owned(job_id, worker_id)
            if job is None:
                return False
            job.error = error
            if retry and job.attempts < self.max_attempts:
                self._requeue(job, delay_s)
            else:
                self._finish(job, "failed")
            return True

    async def defer(self, job_id: str, worker_id: str, delay_s: float) -> bool:
        async with self._lock:
            job = self._owned(job_id, worker_id)
            if job is None:
                return False
            job.attempts -= 1  # the engine was busy: this delivery did not try the job
            job.deferrals += 1
            self._requeue(job, delay_s)
            return True

    async def get(self, job_id: str) -> JobRecord | None:
        self._prune()
        job = self._jobs.get(job_id)
        return replace(job) if job else None

    async def list(self, tenant: str | None, status: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Newest first; `tenant` None = every tenant's (operators)."""
        self._prune()
        jobs = sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)
        picked = [j for j in jobs if (tenant is None or j.tenant == tenant) and (status is None or j.status == status)]
        return [replace(j) for j in picked[:limit]]

    async def cancel(self, job_id: str) -> JobRecord | None:
        """A queued or running job becomes "cancelled" (a running one's worker loses its lease, so its late
        result or failure is refused); a finished one is left as it is. None if there is no such job."""
        async with self._lock:
            self._prune()
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status in ("queued", "running"):
                self._finish(job, "cancelled")
                if job_id in self._queue:
                    self._queue.remove(job_id)
            return replace(job)

    async def requeue_expired(self) -> int:
        async with self._lock:
            now, moved = time.time(), 0
            for job_id, expiry in list(self._leases.items()):
                if expiry < now:
                    job = self._jobs[job_id]
                    if job.attempts < self.max_attempts:
                        self._requeue(job, 0.0)
                    else:  # same record as the Redis requeue script
                        job.error = LOST_TOO_OFTEN
                        self._finish(job, "failed")
                    moved += 1
            return moved

    async def counts(self) -> dict[str, int]:
        self._prune()
        counts = {"queued": 0, "delayed": 0, "running": 0}
        for job in self._jobs.values():
            if job.status == "running":
                counts["running"] += 1
            elif job.status == "queued":
                counts["delayed" if job.not_before > time.time() else "queued"] += 1
        return counts


class MemoryEngineLoad:
    """One gateway: the totals are its own counts (the same routing as before the counts were shared)."""

    def __init__(self) -> None:
        self._own: dict[str, int] = {}

    async def acquire(self, candidates: Sequence[str], own: Mapping[str, int]) -> tuple[str, int]:
        if not candidates:
            raise ValueError("no engine to pick from")
        self._own = dict(own)
        engine = min(candidates, key=lambda url: self._own.get(url, 0))  # min keeps the first of equals
        load = self._own.get(engine, 0)
        self._own[engine] = load + 1
        return engine, load

    async def report(self, own: Mapping[str, int]) -> None:
        self._own = dict(own)

    async def totals(self, engines: Sequence[str]) -> dict[str, int]:
        return {url: self._own.get(url, 0) for url in engines}
