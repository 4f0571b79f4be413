"""Shared state: decoded-frame cache, file registry, rate limits, the job queue and the requests outstanding per
engine (docs/state.md).

base.py: one Protocol per concern and the records; memory.py: the in-process backends; redis_link.py: the Redis
connection and its outage handling; redis_store.py / redis_jobs.py / redis_load.py: the Redis backends (scripts in
lua/); rates.py: rate limits on the `limits` library; bundle.py: them together (`State`); factory.py: from Settings.
"""

from videoqa.service.state.base import (
    JOB_STATUSES,
    EngineLoad,
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
    "EngineLoad",
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
