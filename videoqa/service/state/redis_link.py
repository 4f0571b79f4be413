"""One Redis connection for every state concern, and what an outage does to it.

Fail fast while Redis is down, recover on the first request after it is back: after a connection error the
link is marked down and every call fails at once with StateUnavailableError (HTTP 503 + Retry-After), except
that one caller at a time re-checks with a short PING first; the first PING that succeeds marks the link up
again and that same call goes through. There is no cooldown to sit out, so job submissions succeed again as
soon as Redis answers (an earlier breaker with a 0.5-5 s backoff, plus redis-py's default of 10 retries with
backoff per command, kept refusing for seconds after Redis returned).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from videoqa.service.state.base import StateUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTAGE_ERRORS = (rexc.ConnectionError, rexc.TimeoutError, OSError)


_HELPERS = {"owns": ("owns(",), "live_total": ("now_ms(", "prune_gateways(", "live_total(")}
"""Lua helper files shared by several scripts, and the functions they define: a script that calls one gets the
file in front when loaded."""


def lua(name: str) -> str:
    """A script from videoqa/service/state/lua/ (package data), with the helper files it calls in front."""
    folder = resources.files("videoqa.service.state") / "lua"
    text = (folder / f"{name}.lua").read_text()
    for helper, calls in _HELPERS.items():
        if name != helper and any(call in text for call in calls):
            text = (folder / f"{helper}.lua").read_text() + text
    return text


class RedisLink:
    def __init__(self, url: str, namespace: str = "videoqa", probe_timeout_s: float = 0.5) -> None:
        self.url, self.ns, self.probe_timeout_s = url, namespace, probe_timeout_s
        # One immediate retry: after a Redis restart each pooled connection is dead, and the retry reconnects
        # it; more retries with backoff (redis-py's default) would only make an outage slow to report.
        self.client = aioredis.from_url(
            url,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            health_check_interval=5,
            retry=Retry(NoBackoff(), 1),
            decode_responses=False,
        )
        self.down = False
        self._probing = False

    def key(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    def script(self, name: str) -> Any:
        """A registered script (redis-py reloads it by itself when a restarted Redis no longer has it)."""
        return self.client.register_script(lua(name))

    def healthy(self) -> bool:
        return not self.down

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self.down:
            await self.recover()
        try:
            return await fn(*args, **kwargs)
        except OUTAGE_ERRORS as err:
            self.mark_down(err)
            raise StateUnavailableError(f"Redis is unreachable: {err}") from err

    async def recover(self) -> None:
        """While down: one caller at a time PINGs (briefly); the others are refused at once."""
        if self._probing:
            raise StateUnavailableError("Redis is unreachable")
        self._probing = True
        try:
            await asyncio.wait_for(self.client.ping(), self.probe_timeout_s)
        except OUTAGE_ERRORS as err:
            raise StateUnavailableError(f"Redis is unreachable: {err or 'no answer'}") from err
        finally:
            self._probing = False
        self.down = False
        log.warning("Redis at %s is back", self.url)

    def mark_down(self, err: BaseException) -> None:
        if not self.down:
            log.warning("Redis at %s is unreachable (%s); serving with local fallbacks", self.url, err)
        self.down = True

    async def ping(self) -> bool:
        try:
            return bool(await self.call(self.client.ping))
        except StateUnavailableError:
            return False

    async def close(self) -> None:
        await self.client.aclose()
