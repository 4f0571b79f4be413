"""The Redis job queue: every transition is one Lua script (lua/*.lua), so a crash between two steps cannot
leave a job half-moved, and only the worker holding a job's current lease may act on it (owns.lua).

Keys: `job:<id>` (hash), `jobs:queue` (list, claimed from the right), `jobs:leases` (zset, lease expiry),
`jobs:delayed` (zset, when a backed-off job may run again), `jobs:all` / `jobs:tenant:<t>` (zsets by creation,
for listing). Jobs raise StateUnavailableError during an outage: accepted work is never faked or dropped.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from videoqa.service.state.base import JobRecord, StateUnavailableError
from videoqa.service.state.redis_link import RedisLink
from videoqa.service.tenants import ANONYMOUS


class RedisJobs:
    def __init__(
        self, link: RedisLink, max_attempts: int = 3, result_ttl_s: int = 7 * 86400, failed_ttl_s: int = 7 * 86400
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        for name, ttl in (("result_ttl_s", result_ttl_s), ("failed_ttl_s", failed_ttl_s)):
            if ttl < 1:
                raise ValueError(f"{name} must be >= 1 s, got {ttl}")
        self.link, self.max_attempts = link, max_attempts
        self.result_ttl_s, self.failed_ttl_s = int(result_ttl_s), int(failed_ttl_s)
        self._prefix = link.key("job", "")
        self._queue, self._leases = link.key("jobs", "queue"), link.key("jobs", "leases")
        self._delayed = link.key("jobs", "delayed")
        self._scripts = {
            name: link.script(name)
            for name in ("submit", "claim", "complete", "fail", "defer", "heartbeat", "requeue", "cancel")
        }

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.link.call(self._scripts[name], keys=keys, args=args)

    async def submit(self, job_id: str, payload: dict[str, Any], tenant: str = ANONYMOUS) -> JobRecord:
        keys = [self._queue, self.link.key("jobs", "tenant", tenant), self.link.key("jobs", "all")]
        await self._run("submit", keys, [self._prefix, job_id, json.dumps(payload), time.time(), tenant])
        job = await self.get(job_id)
        if job is None:  # only if the record expired between the two calls
            raise StateUnavailableError(f"job {job_id} vanished right after submission; submit it again")
        return job

    async def claim(self, worker_id: str, lease_s: float) -> JobRecord | None:
        now = time.time()
        keys = [self._queue, self._leases, self._delayed]
        job_id = await self._run("claim", keys, [now + lease_s, worker_id, self._prefix, now])
        return await self.get(job_id.decode()) if job_id else None

    async def heartbeat(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        args = [self._prefix, job_id, worker_id, time.time() + lease_s]
        return bool(await self._run("heartbeat", [self._leases], args))

    async def complete(self, job_id: str, worker_id: str, result: dict[str, Any]) -> bool:
        args = [self._prefix, job_id, json.dumps(result), time.time(), worker_id, self.result_ttl_s]
        return bool(await self._run("complete", [self._leases], args))

    async def fail(self, job_id: str, worker_id: str, error: dict[str, Any], retry: bool, delay_s: float = 0.0) -> bool:
        args = [self._prefix, job_id, json.dumps(error), time.time(), "1" if retry else "0", self.max_attempts]
        args += [worker_id, max(delay_s, 0.0), self.failed_ttl_s]
        return bool(await self._run("fail", [self._leases, self._queue, self._delayed], args))

    async def defer(self, job_id: str, worker_id: str, delay_s: float) -> bool:
        args = [self._prefix, job_id, time.time(), worker_id, max(delay_s, 0.0)]
        return bool(await self._run("defer", [self._leases, self._delayed], args))

    async def get(self, job_id: str) -> JobRecord | None:
        # bytes keys and values: the link's client has decode_responses=False (redis-py types them bytes | str).
        raw = cast(dict[bytes, bytes], await self.link.call(self.link.client.hgetall, self._prefix + job_id))
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
            deferrals=int(d.get("deferrals", 0)),
            not_before=float(d.get("not_before", 0)),
        )

    async def list(self, tenant: str | None, status: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Newest first, from the per-tenant (or, for `tenant` None, the global) index of job ids; ids whose
        record has expired are dropped from the index on the way."""
        index = self.link.key("jobs", "tenant", tenant) if tenant is not None else self.link.key("jobs", "all")
        found: list[JobRecord] = []
        start, page = 0, max(limit, 50)
        while len(found) < limit:
            # members only (no withscores), as bytes: decode_responses=False.
            ids = cast(list[bytes], await self.link.call(self.link.client.zrevrange, index, start, start + page - 1))
            if not ids:
                break
            start += len(ids)
            gone = []
            for raw_id in ids:
                job = await self.get(raw_id.decode())
                if job is None:
                    gone.append(raw_id)
                elif status is None or job.status == status:
                    found.append(job)
            if gone:
                await self.link.call(self.link.client.zrem, index, *gone)
                start -= len(gone)
        return found[:limit]

    async def cancel(self, job_id: str) -> JobRecord | None:
        """As MemoryJobs.cancel; a cancelled record expires like a finished one."""
        args = [self._prefix, job_id, time.time(), self.result_ttl_s]
        await self._run("cancel", [self._queue, self._leases, self._delayed], args)
        return await self.get(job_id)

    async def requeue_expired(self) -> int:
        args = [time.time(), self._prefix, self.max_attempts, self.failed_ttl_s]
        return int(await self._run("requeue", [self._leases, self._queue], args))

    async def counts(self) -> dict[str, int]:
        pipe = self.link.client.pipeline(transaction=False)
        pipe.llen(self._queue)
        pipe.zcard(self._delayed)
        pipe.zcard(self._leases)
        queued, delayed, running = await self.link.call(pipe.execute)
        return {"queued": int(queued), "delayed": int(delayed), "running": int(running)}
