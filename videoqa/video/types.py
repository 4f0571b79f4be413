"""Sampling requests, limits and results (plain dataclasses: they cross process boundaries)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

Policy = Literal["fast", "exact"]

# Animated GIF decodes through PyAV ("gif"); animated WebP through Pillow ("webp_anim", videoqa.video.animated).
# Still images in either format are refused: the video endpoints take videos.
DEFAULT_CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "mpegts", "flv", "ogg", "gif", "webp_anim")
DEFAULT_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mjpeg", "theora", "gif")


@dataclass(frozen=True)
class SamplingSpec:
    """Which frames to take (the two LLaVA-Video policies) and how to return them."""

    num_frames: int | None = 64
    """Uniform sampling: N frames at np.linspace(0, total-1, N) (LLaVA-Video's force_sample, 64 by default).
    Ignored when `fps` is set."""
    fps: float | None = None
    """fps sampling: one frame every 1/fps seconds; more than `max_frames` falls back to uniform max_frames
    (LLaVA-NeXT load_video)."""
    max_frames: int = 64
    """Frame cap for fps sampling."""
    policy: Policy = "fast"
    """"fast": take the nearest keyframe when it lies within `tolerance_s` of the target, else decode exactly;
    "exact": the frame shown at the target time (the last frame whose pts <= target)."""
    tolerance_s: float | None = None
    """Keyframe tolerance for "fast" (default: half the sampling interval)."""
    size: tuple[int, int] | None = (384, 384)
    """Output (width, height), resized by swscale (bicubic, squashed like SigLIP's processor); None = native."""

    def __post_init__(self) -> None:
        if self.fps is None and (self.num_frames is None or self.num_frames < 1):
            raise ValueError(f"num_frames must be >= 1 (or set fps), got {self.num_frames}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.policy not in ("fast", "exact"):
            raise ValueError(f"policy must be 'fast' or 'exact', got {self.policy!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be (width, height) with both >= 1, got {self.size}")

    def cache_key(self) -> str:
        """Stable key of everything that changes the returned frames."""
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DecodeLimits:
    """Checked before any frame is allocated; a hostile file gets a typed error, not the server's memory."""

    max_bytes: int = 2 * 1024**3
    """Largest file accepted, in bytes."""
    max_duration_s: float = 4 * 3600
    """Longest video accepted, in seconds."""
    max_pixels: int = 4096 * 2304
    """Largest frame (width x height) accepted; beyond 4K is refused before decoding."""
    max_streams: int = 8
    """Most streams (video + audio + subtitles + data) in the container."""
    allowed_containers: tuple[str, ...] = DEFAULT_CONTAINERS
    """FFmpeg demuxer names accepted."""
    allowed_codecs: tuple[str, ...] = DEFAULT_CODECS
    """Video codec names accepted."""
    timeout_s: float = 60.0
    """Wall time for one probe or sample, enforced in the worker and by the pool."""
    max_memory_bytes: int = 4 * 1024**3
    """Address-space cap for a decode worker process (RLIMIT_AS)."""
    scale_threads: int = 2
    """swscale threads for resizing the returned frames (1 when every core already runs a busy worker)."""


@dataclass
class VideoInfo:
    """What a probe finds out about a file, cheaply (container headers + a packet pass, no decoding)."""

    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration: float
    num_frames: int
    bytes: int
    rotation: int = 0
    has_audio: bool = False
    keyframes: list[float] = field(default_factory=list)
    """Keyframe times in seconds (from the packet index)."""
    start_time: float = 0.0

    def public(self) -> dict:
        """JSON-able summary for API responses (no keyframe index)."""
        d = asdict(self)
        d.pop("keyframes")
        d["num_keyframes"] = len(self.keyframes)
        return d


@dataclass
class SampledVideo:
    frames: np.ndarray
    """uint8 RGB [F, H, W, 3]."""
    timestamps: list[float]
    """Real presentation times (seconds from the start) of the returned frames."""
    duration: float
    info: VideoInfo
    timings: dict[str, float] = field(default_factory=dict)
    keyframe_hits: int = 0
    """Frames served from a keyframe in the "fast" policy."""
