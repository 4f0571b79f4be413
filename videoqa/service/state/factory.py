"""Build the state backends from Settings (every state setting is used here, and bad values stop the start)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from videoqa.service.state.bundle import MemoryState, RedisState, State
from videoqa.service.state.redis_store import REDIS_MAX_VALUE_BYTES

if TYPE_CHECKING:
    from videoqa.service.settings import Settings


def create_state(
    redis_url: str | None,
    namespace: str = "videoqa",
    max_attempts: int = 3,
    *,
    cache_max_bytes: int = 64 * 1024**2,
    cache_capacity_bytes: int = 512 * 1024**2,
    result_ttl_s: int = 7 * 86400,
    failed_ttl_s: int = 7 * 86400,
) -> State:
    """Redis when a URL is configured, in-process otherwise (same behaviour).

    cache_max_bytes: largest single cache value stored (bigger ones are skipped, never an error).
    cache_capacity_bytes: total in-process cache size (LRU); Redis bounds itself with its own maxmemory policy.
    result_ttl_s / failed_ttl_s: how long a succeeded or cancelled / a failed job's record is kept.
    """
    if redis_url:
        return RedisState(
            redis_url,
            namespace,
            max_attempts,
            result_ttl_s=result_ttl_s,
            cache_max_bytes=cache_max_bytes,
            failed_ttl_s=failed_ttl_s,
        )
    return MemoryState(max_attempts, cache_max_bytes, cache_capacity_bytes, result_ttl_s, failed_ttl_s)


def check_state_settings(settings: Settings) -> None:
    """Refuse, at start, values the backends could not honour (rather than capping them silently)."""
    max_bytes, capacity = settings.frame_cache_max_bytes, settings.frame_cache_capacity_bytes
    if settings.redis_url and max_bytes > REDIS_MAX_VALUE_BYTES:
        raise ValueError(
            f"VIDEOQA_FRAME_CACHE_MAX_BYTES={max_bytes} is over Redis's largest value ({REDIS_MAX_VALUE_BYTES} "
            "bytes, proto-max-bulk-len); lower it"
        )
    if not settings.redis_url and max_bytes > capacity:
        raise ValueError(
            f"VIDEOQA_FRAME_CACHE_MAX_BYTES={max_bytes} is over VIDEOQA_FRAME_CACHE_CAPACITY_BYTES={capacity} "
            "(the in-process cache's total size): such an entry could never be cached; raise the capacity or "
            "lower the entry cap"
        )


def build_state(settings: Settings) -> State:
    check_state_settings(settings)
    return create_state(
        settings.redis_url,
        settings.redis_namespace,
        settings.job_max_attempts,
        cache_max_bytes=settings.frame_cache_max_bytes,
        cache_capacity_bytes=settings.frame_cache_capacity_bytes,
        result_ttl_s=settings.job_result_ttl_s,
        failed_ttl_s=settings.job_failed_ttl_s,
    )
