"""Frames for a request: the sampling spec from its fields and the settings, then the decoded-frame cache or
the decode pool."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videoqa.model.engine import EngineConfig
from videoqa.service.errors import APIError
from videoqa.service.metrics import Metrics
from videoqa.service.protocol import SamplingFields
from videoqa.service.requests import note
from videoqa.service.settings import Settings
from videoqa.service.state import FrameCache
from videoqa.service.tracing import NO_TRACING, NoTracing, SpanLike, Tracing
from videoqa.video import DecodePool, SamplingSpec, VideoInfo, target_times


@dataclass
class Frames:
    frames: np.ndarray
    timestamps: list[float]
    duration: float
    cache_hit: bool


def pack(frames: np.ndarray, timestamps: list[float], duration: float) -> bytes:
    """A cache entry: 4-byte header length, JSON header (timestamps, duration), the frames as .npy."""
    header = json.dumps({"timestamps": timestamps, "duration": duration}).encode()
    buf = io.BytesIO()
    buf.write(len(header).to_bytes(4, "big"))
    buf.write(header)
    np.save(buf, frames, allow_pickle=False)
    return buf.getvalue()


def unpack(blob: bytes) -> tuple[np.ndarray, list[float], float]:
    n = int.from_bytes(blob[:4], "big")
    meta = json.loads(blob[4 : 4 + n])
    frames = np.load(io.BytesIO(blob[4 + n :]), allow_pickle=False)
    return frames, meta["timestamps"], meta["duration"]


def video_info(meta: dict[str, Any]) -> VideoInfo:
    """The upload-time probe kept in the file registry (keyframe index included)."""
    return VideoInfo(**{k: meta[k] for k in VideoInfo.__dataclass_fields__ if k in meta})


class FrameSource:
    def __init__(
        self,
        settings: Settings,
        cache: FrameCache,
        pool: DecodePool,
        metrics: Metrics,
        tracing: Tracing | NoTracing = NO_TRACING,
    ) -> None:
        self.settings, self.cache, self.pool, self.metrics, self.tracing = settings, cache, pool, metrics, tracing

    def spec(self, fields: SamplingFields, cfg: EngineConfig) -> SamplingSpec:
        """What to sample: the request's fields, else the settings' and the checkpoint's defaults."""
        s = self.settings
        default_n = min(s.default_num_frames or cfg.num_frames or cfg.max_frames, s.max_frames)
        n = fields.num_frames or default_n
        cap = min(fields.max_frames or s.max_frames, s.max_frames)
        if fields.num_frames is not None and fields.fps is None and n > s.max_frames:
            raise APIError(
                400, f"num_frames {n} is over this server's limit of {s.max_frames}", "too_many_frames", "num_frames"
            )
        return SamplingSpec(
            num_frames=n,
            fps=fields.fps,
            max_frames=cap,
            policy=fields.policy or s.default_policy,
            size=(cfg.image_size, cfg.image_size),
        )

    @staticmethod
    def planned(meta: dict[str, Any], spec: SamplingSpec) -> int:
        """How many frames `spec` takes from the registered video (before decoding anything)."""
        return len(target_times(video_info(meta), spec)[0])

    async def video(self, path: Path, meta: dict[str, Any], spec: SamplingSpec, tenant: str) -> Frames:
        with self.tracing.span("videoqa.frames", policy=spec.policy, num_frames=spec.num_frames, fps=spec.fps) as span:
            got = await self._video(path, meta, spec, tenant, span)
            span.set(frames=len(got.timestamps), cache_hit=got.cache_hit, duration_s=got.duration)
            return got

    async def _video(self, path: Path, meta: dict[str, Any], spec: SamplingSpec, tenant: str, span: SpanLike) -> Frames:
        # Shared by default: the key is the content hash, and only a caller that holds those exact bytes (it
        # uploaded or fetched them) reaches it, so a hit hands out nothing it could not decode itself. Scope
        # "tenant" also hides the hit itself (docs/service.md).
        sha = meta["id"]
        key = f"frames:{sha}:{spec.cache_key()}"
        if self.settings.frame_cache_scope == "tenant":
            key = f"frames:{tenant}:{sha}:{spec.cache_key()}"
        blob = await self.cache.get(key)
        if blob is not None:
            self.metrics.cache_hits.inc()
            frames, stamps, duration = unpack(blob)
            return Frames(frames, stamps, duration, cache_hit=True)
        self.metrics.cache_misses.inc()
        start = time.perf_counter()
        # No second packet pass: the upload probe has the keyframe index.
        got = await self.pool.sample(path, spec, video_info(meta))
        self.metrics.decode_seconds.observe(time.perf_counter() - start)
        self.metrics.frames_decoded.inc(got.timings.get("frames_decoded", 0.0))
        span.set(frames_decoded=int(got.timings.get("frames_decoded", 0)))
        note(decode_seconds=round(time.perf_counter() - start, 4))
        packed = pack(got.frames, got.timestamps, got.duration)
        if len(packed) <= self.settings.frame_cache_max_bytes:
            await self.cache.set(key, packed, self.settings.frame_cache_ttl_s)
        return Frames(got.frames, got.timestamps, got.duration, cache_hit=False)

    async def image(self, path: Path, cfg: EngineConfig) -> Frames:
        """A still image as one frame."""
        with self.tracing.span("videoqa.frames", image=True, num_frames=1) as span:
            got = await self.pool.image(path, SamplingSpec(num_frames=1, size=(cfg.image_size, cfg.image_size)))
            span.set(frames=1, cache_hit=False)
        return Frames(got.frames, got.timestamps, got.duration, cache_hit=False)
