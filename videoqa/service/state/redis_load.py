"""Requests outstanding per engine, shared by every gateway on one Redis (split mode's least-outstanding routing).

Keys: `engines:gateways` (zset: gateway -> when its last report expires, ms) and `engines:load:<engine URL>`
(hash: gateway -> its requests outstanding there). Each gateway writes only its own fields, with the exact counts
it holds locally; a pick (lua/engine_pick.lua) reads every live gateway's count and adds one to the chosen engine
in one script. A gateway that is killed stops reporting, and after `ttl_s` its counts no longer add up.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from videoqa.service.state.redis_link import RedisLink


class RedisEngineLoad:
    def __init__(self, link: RedisLink, ttl_s: float = 5.0, gateway_id: str | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.link, self.ttl_ms = link, int(ttl_s * 1000)
        self.gateway_id = gateway_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._gateways = link.key("engines", "gateways")
        self._scripts = {name: link.script(name) for name in ("engine_pick", "engine_report", "engine_totals")}

    def _keys(self, engines: Sequence[str]) -> list[str]:
        return [self._gateways, *(self.link.key("engines", "load", url) for url in engines)]

    async def _run(self, name: str, engines: Sequence[str], args: list[Any]) -> Any:
        return await self.link.call(self._scripts[name], keys=self._keys(engines), args=args)

    async def acquire(self, candidates: Sequence[str], own: Mapping[str, int]) -> tuple[str, int]:
        if not candidates:
            raise ValueError("no engine to pick from")
        args = [self.gateway_id, self.ttl_ms, *(own.get(url, 0) for url in candidates)]
        index, total = await self._run("engine_pick", candidates, args)
        return candidates[int(index)], int(total)

    async def report(self, own: Mapping[str, int]) -> None:
        engines = list(own)
        await self._run("engine_report", engines, [self.gateway_id, self.ttl_ms, *own.values()])

    async def totals(self, engines: Sequence[str]) -> dict[str, int]:
        counts = await self._run("engine_totals", engines, [])
        return {url: int(n) for url, n in zip(engines, counts, strict=True)}
