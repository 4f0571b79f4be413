"""Redis frame cache and file registry. An outage is never an exception here: a cache miss or skipped store,
and this gateway's own copy of the file registry (written through, re-registered when an emptied Redis returns).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any, cast

from videoqa.service.state.base import StateUnavailableError
from videoqa.service.state.memory import MemoryFiles
from videoqa.service.state.redis_link import RedisLink
from videoqa.service.tenants import ANONYMOUS

log = logging.getLogger(__name__)

REDIS_MAX_VALUE_BYTES = 512 * 1024**2
"""Redis refuses bulk strings over proto-max-bulk-len, 512 MiB by default."""


class RedisFrameCache:
    def __init__(self, link: RedisLink, max_bytes: int) -> None:
        if not 0 < max_bytes <= REDIS_MAX_VALUE_BYTES:
            raise ValueError(
                f"frame_cache_max_bytes must be in 1..{REDIS_MAX_VALUE_BYTES} with Redis (its largest value, "
                f"proto-max-bulk-len), got {max_bytes}"
            )
        self.link, self.max_bytes = link, max_bytes
        self.hits = self.misses = 0

    async def get(self, key: str) -> bytes | None:
        try:
            # bytes: the link's client has decode_responses=False (redis-py types every reply bytes | str).
            value = cast(bytes | None, await self.link.call(self.link.client.get, self.link.key("cache", key)))
        except StateUnavailableError:
            value = None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    async def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if len(value) > self.max_bytes:  # one huge video must not fill Redis (its memory is shared)
            log.debug("not caching %s: %d bytes > cache_max_bytes %d", key, len(value), self.max_bytes)
            return
        with contextlib.suppress(StateUnavailableError):
            # px, not ex: int() of a sub-second TTL would be 0 and store the value forever.
            px = max(1, int(ttl_s * 1000)) if ttl_s else None
            await self.link.call(self.link.client.set, self.link.key("cache", key), value, px=px)


class RedisFiles:
    """Per-tenant entries `file:<tenant>:<id>` plus `filerefs:<id>` (the tenants holding that content, so the
    shared bytes on disk are removed only with the last entry)."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._local = MemoryFiles()

    async def _register(self, file_id: str, meta: dict[str, Any], tenant: str) -> None:
        pipe = self.link.client.pipeline(transaction=True)
        pipe.set(self.link.key("file", tenant, file_id), json.dumps(meta))
        pipe.sadd(self.link.key("filerefs", file_id), tenant)
        await self.link.call(pipe.execute)

    async def put(self, file_id: str, meta: dict[str, Any], tenant: str = ANONYMOUS) -> None:
        await self._local.put(file_id, meta, tenant)
        with contextlib.suppress(StateUnavailableError):
            await self._register(file_id, meta, tenant)

    async def get(self, file_id: str, tenant: str = ANONYMOUS) -> dict[str, Any] | None:
        try:
            raw = await self.link.call(self.link.client.get, self.link.key("file", tenant, file_id))
        except StateUnavailableError:
            local_meta = await self._local.get(file_id, tenant)
            if local_meta is None:
                # Uploaded through another gateway (or before this one restarted): it may well exist, and None
                # would be a 404 telling the client to upload again; the outage error is a 503 + Retry-After.
                raise
            return local_meta
        if raw:
            meta: dict[str, Any] = json.loads(raw)
            return meta
        # A Redis that restarted empty forgets uploads this gateway still holds: re-register them.
        local = await self._local.get(file_id, tenant)
        if local is not None:
            with contextlib.suppress(StateUnavailableError):
                await self._register(file_id, local, tenant)
        return local

    async def delete(self, file_id: str, tenant: str = ANONYMOUS) -> bool:
        local = await self._local.delete(file_id, tenant)
        try:
            pipe = self.link.client.pipeline(transaction=True)
            pipe.delete(self.link.key("file", tenant, file_id))
            pipe.srem(self.link.key("filerefs", file_id), tenant)
            deleted, _ = await self.link.call(pipe.execute)
            return bool(deleted) or local
        except StateUnavailableError:
            return local

    async def in_use(self, file_id: str) -> bool:
        """During an outage, assume so (keep the bytes)."""
        try:
            return bool(await self.link.call(self.link.client.scard, self.link.key("filerefs", file_id)))
        except StateUnavailableError:
            return True
