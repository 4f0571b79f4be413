"""Frame sampling with PyAV: fast, exact when asked, and safe against hostile files.

Must not import the web app or torch: the gateway, synth and training all use it. Names load on first use
(PEP 562), so `videoqa frames` pays for PyAV and NumPy but not for the worker pool's asyncio and
multiprocessing, and `videoqa --help` for none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from videoqa.video.errors import VideoError
    from videoqa.video.pool import DecodePool
    from videoqa.video.sampler import probe, sample_frames, target_times
    from videoqa.video.types import DecodeLimits, SampledVideo, SamplingSpec, VideoInfo

_WHERE = {
    "DecodeLimits": "types",
    "DecodePool": "pool",
    "SampledVideo": "types",
    "SamplingSpec": "types",
    "VideoError": "errors",
    "VideoInfo": "types",
    "probe": "sampler",
    "sample_frames": "sampler",
    "target_times": "sampler",
}

__all__ = [
    "DecodeLimits",
    "DecodePool",
    "SampledVideo",
    "SamplingSpec",
    "VideoError",
    "VideoInfo",
    "probe",
    "sample_frames",
    "target_times",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'videoqa.video' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"videoqa.video.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
