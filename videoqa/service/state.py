"""Shared state: decoded-frame cache, file registry, rate limits and the job queue.

Two backends with the same behaviour: Redis (redis-py asyncio) for real deployments, in-process for one
machine. If Redis goes away the gateway keeps answering: cache reads miss, rate limits fall back to a local
limiter, the file registry falls back to this process's own copy, and job operations raise
StateUnavailableError (503) instead of silently dropping accepted work. A small circuit breaker keeps an
outage from adding a timeout to every request, and the next attempt after it reconnects.

Jobs are delivered at least once: a claim moves a job to "running" with a lease; a worker that dies stops
renewing it and `requeue_expired` puts the job back. Only the worker holding the job's current lease can
renew, complete or fail it: a worker whose lease lapsed (the job requeued, maybe claimed by another worker)
that reports late is refused (the call returns False), so a late failure cannot queue the job a second time
or drop the new owner's lease. Completion is idempotent: the first result wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from videoqa.service.tenants import ANONYMOUS

log = logging.getLogger(__name__)


class StateUnavailableError(RuntimeError):
    """The shared store is unreachable for an operation that must not be faked (jobs)."""


@dataclass
class RateDecision:
    allowed: bool
    remaining: int
    retry_after_s: float


@dataclass
class JobRecord:
    id: str
    status: str  # queued | running | succeeded | failed | cancelled
    payload: dict[str, Any]
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    worker: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    tenant: str = ANONYMOUS

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("worker")
        return d


# ---------------------------------------------------------------------------------------------------------
# In-process backend
# ---------------------------------------------------------------------------------------------------------


class MemoryState:
    backend = "memory"

    def __init__(
        self, max_attempts: int = 3, cache_max_bytes: int = 64 * 1024**2, cache_capacity_bytes: int = 512 * 1024**2
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if not 0 < cache_max_bytes <= cache_capacity_bytes:
            raise ValueError(
                f"need 0 < cache_max_bytes ({cache_max_bytes}) <= cache_capacity_bytes ({cache_capacity_bytes})"
            )
        self.max_attempts = max_attempts
        self.cache_max_bytes = cache_max_bytes
        self.cache_capacity_bytes = cache_capacity_bytes
        # LRU order: without a total bound every decoded video would stay in this process's memory forever.
        self._cache: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._cache_bytes = 0
        self._files: dict[tuple[str, str], dict[str, Any]] = {}  # (tenant, file id) -> metadata
        self._windows: dict[str, tuple[int, int]] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._queue: list[str] = []
        self._leases: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.cache_hits = 0
        self.cache_misses = 0

    async def ping(self) -> bool:
        return True

    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    # cache
    async def cache_get(self, key: str) -> bytes | None:
        item = self._cache.get(key)
        if item is None or (item[1] is not None and item[1] < time.time()):
            self._cache_drop(key)
            self.cache_misses += 1
            return None
        self._cache.move_to_end(key)
        self.cache_hits += 1
        return item[0]

    async def cache_set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if len(value) > self.cache_max_bytes:
            log.debug("not caching %s: %d bytes > cache_max_bytes %d", key, len(value), self.cache_max_bytes)
            return
        self._cache_drop(key)
        self._cache[key] = (value, time.time() + ttl_s if ttl_s else None)
        self._cache_bytes += len(value)
        while self._cache_bytes > self.cache_capacity_bytes:
            self._cache_drop(next(iter(self._cache)))  # least recently used first

    def _cache_drop(self, key: str) -> None:
        item = self._cache.pop(key, None)
        if item is not None:
            self._cache_bytes -= len(item[0])

    # files: registry entries are per tenant; the bytes on disk (named by content hash) are shared
    async def file_put(self, file_id: str, meta: dict[str, Any], tenant: str = ANONYMOUS) -> None:
        self._files[(tenant, file_id)] = dict(meta)

    async def file_get(self, file_id: str, tenant: str = ANONYMOUS) -> dict[str, Any] | None:
        meta = self._files.get((tenant, file_id))
        return dict(meta) if meta is not None else None

    async def file_delete(self, file_id: str, tenant: str = ANONYMOUS) -> bool:
        return self._files.pop((tenant, file_id), None) is not None

    async def file_in_use(self, file_id: str) -> bool:
        """Whether any tenant still has this content registered (its bytes must stay on disk)."""
        return any(fid == file_id for _, fid in self._files)

    # rate limits (fixed windows)
    async def rate_hit(self, key: str, limit: int, window_s: float) -> RateDecision:
        now = time.time()
        window = int(now // window_s)
        start, count = self._windows.get(key, (window, 0))
        if start != window:
            count = 0
        count += 1
        self._windows[key] = (window, count)
        retry = (window + 1) * window_s - now
        return RateDecision(count <= limit, max(limit - count, 0), retry if count > limit else 0.0)

    # jobs
    async def job_submit(self, job_id: str, payload: dict[str, Any], tenant: str = ANONYMOUS) -> JobRecord:
        async with self._lock:
            if job_id not in self._jobs:
                self._jobs[job_id] = JobRecord(job_id, "queued", payload, tenant=tenant)
                self._queue.insert(0, job_id)
            return self._jobs[job_id]

    async def job_claim(self, worker_id: str, lease_s: float) -> JobRecord | None:
        async with self._lock:
            if not self._queue:
                return None
            job = self._jobs[self._queue.pop()]
            job.status, job.worker, job.updated = "running", worker_id, time.time()
            job.attempts += 1
            self._leases[job.id] = time.time() + lease_s
            return JobRecord(**asdict(job))

    def _owns(self, job_id: str, worker_id: str) -> JobRecord | None:
        """The job if `worker_id` holds its current lease (same rule as the Redis scripts' ownership check)."""
        job = self._jobs.get(job_id)
        if job is None or job.status != "running" or job.worker != worker_id or job_id not in self._leases:
            return None
        return job

    async def job_heartbeat(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        async with self._lock:
            if self._owns(job_id, worker_id) is None:
                return False
            self._leases[job_id] = time.time() + lease_s
            return True

    async def job_complete(self, job_id: str, worker_id: str, result: dict[str, Any]) -> bool:
        async with self._lock:
            job = self._owns(job_id, worker_id)
            if job is None:
                return False  # finished already (first result wins) or the lease moved on
            job.status, job.result, job.error, job.updated = "succeeded", result, None, time.time()
            self._leases.pop(job_id, None)
            return True

    async def job_fail(self, job_id: str, worker_id: str, error: dict[str, Any], retry: bool) -> bool:
        async with self._lock:
            job = self._owns(job_id, worker_id)
            if job is None:
                return False
            self._leases.pop(job_id, None)
            job.error, job.updated = error, time.time()
            if retry and job.attempts < self.max_attempts:
                job.status = "queued"
                self._queue.insert(0, job_id)
            else:
                job.status = "failed"
            return True

    async def job_get(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        return JobRecord(**asdict(job)) if job else None

    async def job_list(self, tenant: str | None, status: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Newest first; `tenant` None = every tenant's (operators)."""
        jobs = sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)
        picked = [j for j in jobs if (tenant is None or j.tenant == tenant) and (status is None or j.status == status)]
        return [JobRecord(**asdict(j)) for j in picked[:limit]]

    async def job_cancel(self, job_id: str) -> JobRecord | None:
        """A queued or running job becomes "cancelled" (a running one's worker loses its lease, so its late result
        or failure is refused); a finished one is left as it is. None if there is no such job."""
        async with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status in ("queued", "running"):
                job.status, job.updated = "cancelled", time.time()
                self._leases.pop(job_id, None)
                if job_id in self._queue:
                    self._queue.remove(job_id)
            return JobRecord(**asdict(job))

    async def job_requeue_expired(self) -> int:
        async with self._lock:
            now, moved = time.time(), 0
            for job_id, expiry in list(self._leases.items()):
                if expiry < now:
                    del self._leases[job_id]
                    job = self._jobs[job_id]
                    job.status = "queued" if job.attempts < self.max_attempts else "failed"
                    job.updated = time.time()
                    if job.status == "queued":
                        self._queue.insert(0, job_id)
                    else:  # same record as the Redis backend's _REQUEUE script
                        job.error = {"message": "worker lost too many times"}
                    moved += 1
            return moved

    async def job_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self._jobs.values():
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts


# ---------------------------------------------------------------------------------------------------------
# Redis backend
# ---------------------------------------------------------------------------------------------------------

# Atomic submit: a gateway dying between "create the record" and "queue it" would otherwise leave a job that
# every later (idempotent) submit sees as existing but no worker ever receives.
_SUBMIT = """
local key = ARGV[1] .. ARGV[2]
if redis.call('HSETNX', key, 'payload', ARGV[3]) == 0 then return 0 end
redis.call('HSET', key, 'status', 'queued', 'attempts', 0, 'created', ARGV[4], 'updated', ARGV[4], 'tenant', ARGV[5])
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return 1
"""
# Cancel: out of the queue and the lease set, so no worker claims it and the current one's lease is gone.
_CANCEL = """
local key = ARGV[1] .. ARGV[2]
local status = redis.call('HGET', key, 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('LREM', KEYS[1], 0, ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HSET', key, 'status', 'cancelled', 'updated', ARGV[3])
redis.call('EXPIRE', key, ARGV[4])
return 1
"""
_CLAIM = """
local id = redis.call('RPOP', KEYS[1])
if not id then return false end
redis.call('ZADD', KEYS[2], ARGV[1], id)
local key = ARGV[3] .. id
redis.call('HSET', key, 'status', 'running', 'worker', ARGV[2], 'updated', ARGV[4])
redis.call('HINCRBY', key, 'attempts', 1)
return id
"""
# Complete, fail and heartbeat act only for the worker holding the job's current lease (worker field, running,
# still in the lease set); anyone else is a worker whose lease lapsed and whose job may already be queued again
# or running elsewhere: acting for it would deliver the job twice or drop the new owner's lease.
_OWNS = """
local function owns(key, id, worker)
  return redis.call('HGET', key, 'worker') == worker and redis.call('HGET', key, 'status') == 'running'
    and redis.call('ZSCORE', KEYS[1], id) ~= false
end
"""
_COMPLETE = _OWNS + """
local key = ARGV[1] .. ARGV[2]
if not owns(key, ARGV[2], ARGV[5]) then return 0 end
redis.call('HSET', key, 'status', 'succeeded', 'result', ARGV[3], 'updated', ARGV[4])
redis.call('HDEL', key, 'error')
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
"""
_FAIL = _OWNS + """
local key = ARGV[1] .. ARGV[2]
if not owns(key, ARGV[2], ARGV[7]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
redis.call('HSET', key, 'error', ARGV[3], 'updated', ARGV[4])
if ARGV[5] == '1' and attempts < tonumber(ARGV[6]) then
  redis.call('HSET', key, 'status', 'queued')
  redis.call('LPUSH', KEYS[2], ARGV[2])
else
  redis.call('HSET', key, 'status', 'failed')
end
return 1
"""
# Atomic: a lease is only extended for the job's current owner while it is still leased, so a heartbeat that
# races a requeue cannot resurrect a lease for a job that is already back in the queue (it would be pushed twice).
_HEARTBEAT = _OWNS + """
local key = ARGV[1] .. ARGV[2]
if not owns(key, ARGV[2], ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
return 1
"""
_REQUEUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[2] .. id
  local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
  if attempts < tonumber(ARGV[3]) then
    redis.call('HSET', key, 'status', 'queued')
    redis.call('LPUSH', KEYS[2], id)
  else
    redis.call('HSET', key, 'status', 'failed', 'error', '{"message": "worker lost too many times"}')
  end
end
return #ids
"""


class RedisState:
    backend = "redis"

    def __init__(
        self,
        url: str,
        namespace: str = "videoqa",
        max_attempts: int = 3,
        result_ttl_s: int = 7 * 86400,
        cache_max_bytes: int = 64 * 1024**2,
    ) -> None:
        import redis.asyncio as aioredis

        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if result_ttl_s < 1:
            raise ValueError(f"result_ttl_s must be >= 1 s, got {result_ttl_s}")
        self.cache_max_bytes = cache_max_bytes
        self.url = url
        self.ns = namespace
        self.max_attempts = max_attempts
        self.result_ttl_s = result_ttl_s
        self._redis = aioredis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=5, decode_responses=False
        )
        self._local = MemoryState(max_attempts, cache_max_bytes, cache_max_bytes)  # fallbacks during an outage
        self._down_until = 0.0
        self._backoff = 0.5
        self._was_down = False
        self.cache_hits = 0
        self.cache_misses = 0
        self._claim = self._redis.register_script(_CLAIM)
        self._complete = self._redis.register_script(_COMPLETE)
        self._fail = self._redis.register_script(_FAIL)
        self._requeue = self._redis.register_script(_REQUEUE)
        self._heartbeat = self._redis.register_script(_HEARTBEAT)
        self._submit = self._redis.register_script(_SUBMIT)
        self._cancel = self._redis.register_script(_CANCEL)

    def _k(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    def healthy(self) -> bool:
        return time.monotonic() >= self._down_until and not self._was_down

    async def _call(self, fn, *args, **kwargs):
        """Run a Redis call; on connection trouble open the breaker and raise StateUnavailableError."""
        import redis.exceptions as rexc

        if time.monotonic() < self._down_until:
            raise StateUnavailableError("Redis is unreachable; retrying shortly")
        try:
            result = await fn(*args, **kwargs)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as err:
            self._down_until = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 5.0)
            if not self._was_down:
                log.warning("Redis at %s is unreachable (%s); serving with local fallbacks", self.url, err)
            self._was_down = True
            raise StateUnavailableError(f"Redis is unreachable: {err}") from err
        if self._was_down:
            log.warning("Redis at %s is back", self.url)
            self._was_down = False
        self._backoff = 0.5
        return result

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self._redis.ping))
        except StateUnavailableError:
            return False

    async def close(self) -> None:
        await self._redis.aclose()

    # cache: an outage is a miss
    async def cache_get(self, key: str) -> bytes | None:
        try:
            value = await self._call(self._redis.get, self._k("cache", key))
        except StateUnavailableError:
            value = None
        if value is None:
            self.cache_misses += 1
        else:
            self.cache_hits += 1
        return value

    async def cache_set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if len(value) > self.cache_max_bytes:  # one huge video must not fill Redis (its memory is shared)
            log.debug("not caching %s: %d bytes > cache_max_bytes %d", key, len(value), self.cache_max_bytes)
            return
        with contextlib.suppress(StateUnavailableError):
            # px, not ex: int() of a sub-second TTL would be 0 and store the value forever.
            px = max(1, int(ttl_s * 1000)) if ttl_s else None
            await self._call(self._redis.set, self._k("cache", key), value, px=px)

    # files: per-tenant entries `file:<tenant>:<id>` plus `filerefs:<id>` (the tenants holding that content, so
    # the shared bytes on disk are removed only with the last entry); write-through to a local copy so this
    # gateway still finds its own uploads during an outage
    async def _file_register(self, file_id: str, meta: dict[str, Any], tenant: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._k("file", tenant, file_id), json.dumps(meta))
        pipe.sadd(self._k("filerefs", file_id), tenant)
        await self._call(pipe.execute)

    async def file_put(self, file_id: str, meta: dict[str, Any], tenant: str = ANONYMOUS) -> None:
        await self._local.file_put(file_id, meta, tenant)
        with contextlib.suppress(StateUnavailableError):
            await self._file_register(file_id, meta, tenant)

    async def file_get(self, file_id: str, tenant: str = ANONYMOUS) -> dict[str, Any] | None:
        try:
            raw = await self._call(self._redis.get, self._k("file", tenant, file_id))
        except StateUnavailableError:
            return await self._local.file_get(file_id, tenant)
        if raw:
            return json.loads(raw)
        # A Redis that restarted empty forgets uploads this gateway still holds: re-register them.
        local = await self._local.file_get(file_id, tenant)
        if local is not None:
            with contextlib.suppress(StateUnavailableError):
                await self._file_register(file_id, local, tenant)
        return local

    async def file_delete(self, file_id: str, tenant: str = ANONYMOUS) -> bool:
        local = await self._local.file_delete(file_id, tenant)
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self._k("file", tenant, file_id))
            pipe.srem(self._k("filerefs", file_id), tenant)
            deleted, _ = await self._call(pipe.execute)
            return bool(deleted) or local
        except StateUnavailableError:
            return local

    async def file_in_use(self, file_id: str) -> bool:
        """Whether any tenant still has this content registered; during an outage, assume so (keep the bytes)."""
        try:
            return bool(await self._call(self._redis.scard, self._k("filerefs", file_id)))
        except StateUnavailableError:
            return True

    # rate limits: an outage falls back to this process's own windows
    async def rate_hit(self, key: str, limit: int, window_s: float) -> RateDecision:
        now = time.time()
        window = int(now // window_s)
        rkey = self._k("rate", key, str(window))
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(rkey)
            pipe.expire(rkey, int(window_s) + 1)
            count, _ = await self._call(pipe.execute)
        except StateUnavailableError:
            return await self._local.rate_hit(key, limit, window_s)
        retry = (window + 1) * window_s - now
        return RateDecision(count <= limit, max(limit - count, 0), retry if count > limit else 0.0)

    # jobs: never faked
    async def job_submit(self, job_id: str, payload: dict[str, Any], tenant: str = ANONYMOUS) -> JobRecord:
        await self._call(
            self._submit,
            keys=[self._k("jobs", "queue"), self._k("jobs", "tenant", tenant), self._k("jobs", "all")],
            args=[self._k("job", ""), job_id, json.dumps(payload), time.time(), tenant],
        )
        job = await self.job_get(job_id)
        if job is None:  # only if the record expired between the two calls (result_ttl_s)
            raise StateUnavailableError(f"job {job_id} vanished right after submission; submit it again")
        return job

    async def job_claim(self, worker_id: str, lease_s: float) -> JobRecord | None:
        job_id = await self._call(
            self._claim,
            keys=[self._k("jobs", "queue"), self._k("jobs", "leases")],
            args=[time.time() + lease_s, worker_id, self._k("job", ""), time.time()],
        )
        if not job_id:
            return None
        return await self.job_get(job_id.decode())

    async def job_heartbeat(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        ok = await self._call(
            self._heartbeat,
            keys=[self._k("jobs", "leases")],
            args=[self._k("job", ""), job_id, worker_id, time.time() + lease_s],
        )
        return bool(ok)

    async def job_complete(self, job_id: str, worker_id: str, result: dict[str, Any]) -> bool:
        done = await self._call(
            self._complete,
            keys=[self._k("jobs", "leases")],
            args=[self._k("job", ""), job_id, json.dumps(result), time.time(), worker_id],
        )
        if done:
            await self._call(self._redis.expire, self._k("job", job_id), self.result_ttl_s)
        return bool(done)

    async def job_fail(self, job_id: str, worker_id: str, error: dict[str, Any], retry: bool) -> bool:
        args = [self._k("job", ""), job_id, json.dumps(error), time.time(), "1" if retry else "0", self.max_attempts]
        done = await self._call(
            self._fail, keys=[self._k("jobs", "leases"), self._k("jobs", "queue")], args=[*args, worker_id]
        )
        return bool(done)

    async def job_get(self, job_id: str) -> JobRecord | None:
        raw = await self._call(self._redis.hgetall, self._k("job", job_id))
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return JobRecord(
            id=job_id,
            status=d.get("status", "queued"),
            payload=json.loads(d.get("payload", "{}")),
            attempts=int(d.get("attempts", 0)),
            result=json.loads(d["result"]) if "result" in d else None,
            error=json.loads(d["error"]) if "error" in d else None,
            worker=d.get("worker"),
            created=float(d.get("created", 0)),
            updated=float(d.get("updated", 0)),
            tenant=d.get("tenant", ANONYMOUS),
        )

    async def job_list(self, tenant: str | None, status: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Newest first, from the per-tenant (or, for `tenant` None, the global) index of job ids; ids whose
        record has expired (result_ttl_s) are dropped from the index on the way."""
        index = self._k("jobs", "tenant", tenant) if tenant is not None else self._k("jobs", "all")
        found: list[JobRecord] = []
        start, page = 0, max(limit, 50)
        while len(found) < limit:
            ids = await self._call(self._redis.zrevrange, index, start, start + page - 1)
            if not ids:
                break
            start += len(ids)
            gone = []
            for raw_id in ids:
                job = await self.job_get(raw_id.decode())
                if job is None:
                    gone.append(raw_id)
                elif status is None or job.status == status:
                    found.append(job)
            if gone:
                await self._call(self._redis.zrem, index, *gone)
                start -= len(gone)
        return found[:limit]

    async def job_cancel(self, job_id: str) -> JobRecord | None:
        """Same as MemoryState.job_cancel; a cancelled record expires like a finished one."""
        await self._call(
            self._cancel,
            keys=[self._k("jobs", "queue"), self._k("jobs", "leases")],
            args=[self._k("job", ""), job_id, time.time(), self.result_ttl_s],
        )
        return await self.job_get(job_id)

    async def job_requeue_expired(self) -> int:
        return int(
            await self._call(
                self._requeue,
                keys=[self._k("jobs", "leases"), self._k("jobs", "queue")],
                args=[time.time(), self._k("job", ""), self.max_attempts],
            )
        )

    async def job_counts(self) -> dict[str, int]:
        queued = await self._call(self._redis.llen, self._k("jobs", "queue"))
        running = await self._call(self._redis.zcard, self._k("jobs", "leases"))
        return {"queued": int(queued), "running": int(running)}


State = MemoryState | RedisState


def create_state(
    redis_url: str | None,
    namespace: str = "videoqa",
    max_attempts: int = 3,
    *,
    cache_max_bytes: int = 64 * 1024**2,
    cache_capacity_bytes: int = 512 * 1024**2,
    result_ttl_s: int = 7 * 86400,
) -> State:
    """Redis when a URL is configured, in-process otherwise (same behaviour).

    cache_max_bytes: largest single cache value stored (bigger ones are skipped, never an error).
    cache_capacity_bytes: total in-process cache size (LRU); Redis bounds itself with its own maxmemory policy.
    result_ttl_s: how long a finished job's record and result are kept in Redis.
    """
    if redis_url:
        return RedisState(
            redis_url, namespace, max_attempts, result_ttl_s=result_ttl_s, cache_max_bytes=cache_max_bytes
        )
    return MemoryState(max_attempts, cache_max_bytes=cache_max_bytes, cache_capacity_bytes=cache_capacity_bytes)
