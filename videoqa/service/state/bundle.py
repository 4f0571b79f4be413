"""`State`: the concerns of one backend together, as the gateway holds them (`app.state.state`).

Callers use the typed concerns (`state.cache`, `state.files`, `state.rates`, `state.jobs`, `state.engines`: the
requests outstanding per engine in split mode); the flat methods
(`cache_get`, `job_submit`, ...) are the same calls under the names the gateway used before the split.
"""

from __future__ import annotations

from typing import Any

from videoqa.service.state.base import (
    EngineLoad,
    FileRegistry,
    FrameCache,
    JobQueue,
    JobRecord,
    RateDecision,
    RateLimiter,
)
from videoqa.service.state.memory import MemoryEngineLoad, MemoryFiles, MemoryFrameCache, MemoryJobs
from videoqa.service.state.rates import RedisRateLimiter, memory_rate_limiter
from videoqa.service.state.redis_jobs import RedisJobs
from videoqa.service.state.redis_link import RedisLink
from videoqa.service.state.redis_load import RedisEngineLoad
from videoqa.service.state.redis_store import RedisFiles, RedisFrameCache
from videoqa.service.tenants import ANONYMOUS


class State:
    backend: str

    def __init__(
        self, cache: FrameCache, files: FileRegistry, rates: RateLimiter, jobs: JobQueue, engines: EngineLoad
    ) -> None:
        self.cache, self.files, self.rates, self.jobs, self.engines = cache, files, rates, jobs, engines

    async def ping(self) -> bool:
        return True

    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    @property
    def cache_hits(self) -> int:
        return self.cache.hits

    @property
    def cache_misses(self) -> int:
        return self.cache.misses

    # the flat names
    async def cache_get(self, key: str) -> bytes | None:
        return await self.cache.get(key)

    async def cache_set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        await self.cache.set(key, value, ttl_s)

    async def file_put(self, file_id: str, meta: dict[str, Any], tenant: str = ANONYMOUS) -> None:
        await self.files.put(file_id, meta, tenant)

    async def file_get(self, file_id: str, tenant: str = ANONYMOUS) -> dict[str, Any] | None:
        return await self.files.get(file_id, tenant)

    async def file_delete(self, file_id: str, tenant: str = ANONYMOUS) -> bool:
        return await self.files.delete(file_id, tenant)

    async def file_in_use(self, file_id: str) -> bool:
        return await self.files.in_use(file_id)

    async def rate_hit(self, key: str, limit: int, window_s: float) -> RateDecision:
        return await self.rates.hit(key, limit, window_s)

    async def job_submit(self, job_id: str, payload: dict[str, Any], tenant: str = ANONYMOUS) -> JobRecord:
        return await self.jobs.submit(job_id, payload, tenant)

    async def job_claim(self, worker_id: str, lease_s: float) -> JobRecord | None:
        return await self.jobs.claim(worker_id, lease_s)

    async def job_heartbeat(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        return await self.jobs.heartbeat(job_id, worker_id, lease_s)

    async def job_complete(self, job_id: str, worker_id: str, result: dict[str, Any]) -> bool:
        return await self.jobs.complete(job_id, worker_id, result)

    async def job_fail(
        self, job_id: str, worker_id: str, error: dict[str, Any], retry: bool, delay_s: float = 0.0
    ) -> bool:
        return await self.jobs.fail(job_id, worker_id, error, retry, delay_s)

    async def job_defer(self, job_id: str, worker_id: str, delay_s: float) -> bool:
        return await self.jobs.defer(job_id, worker_id, delay_s)

    async def job_get(self, job_id: str) -> JobRecord | None:
        return await self.jobs.get(job_id)

    async def job_list(self, tenant: str | None, status: str | None = None, limit: int = 100) -> list[JobRecord]:
        return await self.jobs.list(tenant, status, limit)

    async def job_cancel(self, job_id: str) -> JobRecord | None:
        return await self.jobs.cancel(job_id)

    async def job_requeue_expired(self) -> int:
        return await self.jobs.requeue_expired()

    async def job_counts(self) -> dict[str, int]:
        return await self.jobs.counts()


class MemoryState(State):
    backend = "memory"

    def __init__(
        self,
        max_attempts: int = 3,
        cache_max_bytes: int = 64 * 1024**2,
        cache_capacity_bytes: int = 512 * 1024**2,
        result_ttl_s: float = 7 * 86400,
        failed_ttl_s: float = 7 * 86400,
    ) -> None:
        super().__init__(
            MemoryFrameCache(cache_max_bytes, cache_capacity_bytes),
            MemoryFiles(),
            memory_rate_limiter(),
            MemoryJobs(max_attempts, result_ttl_s, failed_ttl_s),
            MemoryEngineLoad(),
        )


class RedisState(State):
    backend = "redis"

    def __init__(
        self,
        url: str,
        namespace: str = "videoqa",
        max_attempts: int = 3,
        result_ttl_s: int = 7 * 86400,
        cache_max_bytes: int = 64 * 1024**2,
        failed_ttl_s: int = 7 * 86400,
    ) -> None:
        self.link = RedisLink(url, namespace)
        self.url = url
        self._rates = RedisRateLimiter(self.link)
        super().__init__(
            RedisFrameCache(self.link, cache_max_bytes),
            RedisFiles(self.link),
            self._rates,
            RedisJobs(self.link, max_attempts, result_ttl_s, failed_ttl_s),
            RedisEngineLoad(self.link),
        )

    async def ping(self) -> bool:
        return await self.link.ping()

    def healthy(self) -> bool:
        return self.link.healthy()

    async def close(self) -> None:
        await self._rates.close()
        await self.link.close()
