"""Dynamic-video selection (paper section 3.1): keep videos with real scene dynamics, drop the rest, say why.

Filters, as the paper states them: more than 2 scenes, 5-180 s long, scenes per second <= 0.5 (drops slide
shows), above a resolution floor (480p). Scenes come from PySceneDetect's ContentDetector (HSV content
change between frames), fed with frames from our own sampler so hostile files stay bounded by DecodeLimits
and decoding stays sparse (a few frames per second, small).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from videoqa.video import SamplingSpec, VideoError, probe, sample_frames


class SelectionConfig(BaseModel):
    """Paper defaults; every threshold can be changed (the procedural world's frames are 192 px high)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_scenes: int = Field(default=3, ge=1, description="Keep videos with at least this many scenes (paper: > 2).")
    min_seconds: float = Field(default=5.0, ge=0, description="Shortest video kept (paper: 5 s).")
    max_seconds: float = Field(default=180.0, gt=0, description="Longest video kept (paper: 180 s).")
    max_scenes_per_second: float = Field(default=0.5, gt=0, description="Drop faster cutting (paper: 0.5).")
    min_height: int = Field(default=480, ge=0, description="Resolution floor in pixels of height (paper: 480p).")
    detect_fps: float = Field(default=4.0, gt=0, description="Frames per second looked at by scene detection.")
    threshold: float = Field(default=27.0, gt=0, description="ContentDetector threshold (PySceneDetect default).")
    min_scene_seconds: float = Field(default=1.0, ge=0, description="Shortest scene the detector may report.")


@dataclass
class Selection:
    video: str
    kept: bool
    reasons: list[str] = field(default_factory=list)
    """Why it was dropped (empty when kept)."""
    duration: float = 0.0
    height: int = 0
    scenes: list[tuple[float, float]] = field(default_factory=list)
    """[start, end) seconds of each detected scene."""

    def as_dict(self) -> dict:
        return asdict(self)


def detect_scenes(path: str | Path, cfg: SelectionConfig | None = None) -> list[tuple[float, float]]:
    """Scene boundaries from frames sampled at `detect_fps`, downscaled (cuts do not need detail)."""
    import numpy as np
    from scenedetect import ContentDetector, FrameTimecode

    cfg = cfg or SelectionConfig()
    got = sample_frames(
        path,
        SamplingSpec(
            fps=cfg.detect_fps,
            max_frames=int(cfg.max_seconds * cfg.detect_fps) + 1,
            policy="exact",
            size=(128, 96),
        ),
    )
    detector = ContentDetector(
        threshold=cfg.threshold, min_scene_len=max(int(cfg.min_scene_seconds * cfg.detect_fps), 1)
    )
    cuts: list[float] = []
    for i, frame in enumerate(got.frames):
        bgr = np.ascontiguousarray(frame[..., ::-1])  # OpenCV's channel order
        # PySceneDetect >= 0.7 takes and returns FrameTimecodes; we count frames at detect_fps, so a
        # cut's frame number indexes our own (real) timestamps.
        for cut in detector.process_frame(FrameTimecode(i, fps=cfg.detect_fps), bgr):
            if 0 < cut.frame_num < len(got.timestamps):
                cuts.append(got.timestamps[cut.frame_num])
    edges = [0.0, *sorted(set(cuts)), got.duration]
    return [(round(a, 3), round(b, 3)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def select(path: str | Path, video: str, cfg: SelectionConfig | None = None) -> Selection:
    """Apply the filters to one video; cheap checks (probe) first, scene detection only if they pass."""
    cfg = cfg or SelectionConfig()
    try:
        info = probe(path)
    except VideoError as err:
        return Selection(video, False, [f"unreadable: {err}"])
    out = Selection(video, False, duration=round(info.duration, 3), height=info.height)
    if not cfg.min_seconds <= info.duration <= cfg.max_seconds:
        out.reasons.append(f"duration {info.duration:.1f} s outside {cfg.min_seconds:g}-{cfg.max_seconds:g} s")
    if info.height < cfg.min_height:
        out.reasons.append(f"height {info.height} px below {cfg.min_height} px")
    if out.reasons:
        return out
    try:
        out.scenes = detect_scenes(path, cfg)
    except VideoError as err:
        out.reasons.append(f"unreadable: {err}")
        return out
    n = len(out.scenes)
    if n < cfg.min_scenes:
        out.reasons.append(f"{n} scene(s), fewer than {cfg.min_scenes}")
    if n / max(info.duration, 1e-6) > cfg.max_scenes_per_second:
        out.reasons.append(f"{n} scenes in {info.duration:.1f} s: over {cfg.max_scenes_per_second:g} per second")
    out.kept = not out.reasons
    return out
