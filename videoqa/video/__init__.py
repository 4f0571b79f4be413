"""Frame sampling with PyAV: fast, exact when asked, and safe against hostile files.

Must not import the web app or torch: the gateway, synth and training all use it.
"""

from videoqa.video.errors import VideoError
from videoqa.video.pool import DecodePool
from videoqa.video.sampler import probe, sample_frames, target_times
from videoqa.video.types import DecodeLimits, SampledVideo, SamplingSpec, VideoInfo

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
