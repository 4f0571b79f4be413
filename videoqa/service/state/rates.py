"""Rate limits on the `limits` library: a moving window (no burst of 2x the limit across a window edge, as fixed
windows allow), stored in this process or in Redis (limits' own Lua scripts, so gateways share one count).

Memory stays bounded: limits' MemoryStorage keeps at most `limit` timestamps per key and sweeps keys whose
window has passed, so it holds only the callers seen within the last window. During a Redis outage the Redis
limiter falls back to an in-process one (limits still enforced, per gateway instead of globally).
"""

from __future__ import annotations

import logging
import time

import limits.errors
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from videoqa.service.state.base import RateDecision, StateUnavailableError
from videoqa.service.state.redis_link import OUTAGE_ERRORS, RedisLink

log = logging.getLogger(__name__)


class LimitsRateLimiter:
    """One moving-window limiter over a limits storage."""

    def __init__(self, storage: MemoryStorage | RedisStorage) -> None:
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, key: str, limit: int, window_s: float) -> RateDecision:
        item = RateLimitItemPerSecond(limit, max(1, round(window_s)))
        allowed = await self._limiter.hit(item, key)
        stats = await self._limiter.get_window_stats(item, key)
        reset = max(stats.reset_time - time.time(), 0.0)
        # Denied: the oldest hit in the window leaves it at reset_time, and then one more request fits.
        return RateDecision(allowed, max(stats.remaining, 0), 0.0 if allowed else max(reset, 0.001), limit, reset)


def memory_rate_limiter() -> LimitsRateLimiter:
    return LimitsRateLimiter(MemoryStorage())


def _limits_uri(url: str) -> str:
    """limits names its asyncio storages async+redis://, async+rediss://, async+redis+unix://."""
    if url.startswith("unix://"):
        return "async+redis+unix://" + url.removeprefix("unix://")
    return "async+" + url


class RedisRateLimiter:
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        storage = RedisStorage(
            _limits_uri(link.url),
            wrap_exceptions=True,
            implementation="redispy",
            key_prefix=link.key("rate"),
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            # see RedisLink: report an outage at once. limits types **options as scalars; they reach redis-py,
            # which takes a Retry.
            retry=Retry(NoBackoff(), 1),  # type: ignore[arg-type]
        )
        self._shared = LimitsRateLimiter(storage)
        self._local = memory_rate_limiter()

    async def hit(self, key: str, limit: int, window_s: float) -> RateDecision:
        try:
            if self.link.down:
                await self.link.recover()  # the first request after Redis returns brings it back
            return await self._shared.hit(key, limit, window_s)
        except StateUnavailableError:
            pass
        except (limits.errors.StorageError, *OUTAGE_ERRORS) as err:
            self.link.mark_down(err)
        return await self._local.hit(key, limit, window_s)

    async def close(self) -> None:
        bridge = getattr(self._shared.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None:
            await client.aclose()
