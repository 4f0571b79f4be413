"""Shared state: decoded-frame cache, file registry, rate limits and the job queue (docs/state.md).

base.py: one Protocol per concern and the records; memory.py: the in-process backends; redis_link.py: the Redis
connection and its outage handling; redis_store.py / redis_jobs.py: the Redis backends (scripts in lua/);
rates.py: rate limits on the `limits` library; bundle.py: the four together (`State`); factory.py: from Settings.
"""

from videoqa.service.state.base import (
    JOB_STATUSES,
    FileRegistry,
    FrameCache,
    JobQueue,
    JobRecord,
    RateDecision,
    RateLimiter,
    StateUnavailableError,
)
from videoqa.service.state.bundle import MemoryState, RedisState, State
from videoqa.service.state.factory import build_state, check_state_settings, create_state

__all__ = [
    "JOB_STATUSES",
    "FileRegistry",
    "FrameCache",
    "JobQueue",
    "JobRecord",
    "MemoryState",
    "RateDecision",
    "RateLimiter",
    "RedisState",
    "State",
    "StateUnavailableError",
    "build_state",
    "check_state_settings",
    "create_state",
]
