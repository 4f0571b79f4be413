"""The video token layout: the one source of truth for how many tokens a video becomes.

Everything that needs that number calls `num_video_tokens` (or `frame_plan`): the vLLM processor when it
inserts placeholders, the torch packing in `packing.py`, training when it builds sequences, and the
gateway's budget checks. This module is pure Python (no torch) so the gateway can import it cheaply.

Semantics follow the official LLaVA-NeXT code (llava/model/llava_arch.py, `get_2dPool`,
`add_token_per_grid`, `add_token_per_frame`) and the paper's SlowFast representation (section 4, appendix A.2):

* Pooling happens after the projector, per frame, on the vision grid (27x27 for SigLIP-384):
  average/max pooling with stride p gives floor(g/p) per side, bilinear gives ceil(g/p).
* SlowFast stride s: frame i is *slow* iff i % s == 0 and is pooled with stride p; the others are *fast* and
  pooled with stride 2p. Frames stay interleaved in time order; no frame appears twice. s == 1 is the
  simple representation.
* Newline layout (`mm_newline_position`): grid = image_newline after every row of every frame;
  frame = one after each frame; one_token = one after the whole video; no_token = none.
* Optional learned frame token after each frame (after that frame's newlines), as in the official
  (commented-out) `add_faster_video` path's `faster_token`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PoolMode = Literal["average", "bilinear", "max"]
NewlineLayout = Literal["grid", "frame", "one_token", "no_token"]

POOL_MODES: tuple[str, ...] = ("average", "bilinear", "max")
NEWLINE_LAYOUTS: tuple[str, ...] = ("grid", "frame", "one_token", "no_token")


class LayoutError(ValueError):
    """A video layout setting is invalid; the message names the field and the bad value."""


@dataclass(frozen=True)
class VideoLayout:
    """How a video's per-frame vision features become LLM input embeddings.

    Stored in the checkpoint's config.json under "video_layout"; converters map the original
    LLaVA-NeXT keys onto it (see `from_llava_config`).
    """

    pool_mode: PoolMode = "average"
    """Spatial pooling after the projector: "average" or "max" (floor(g/p) per side), "bilinear" (ceil(g/p))."""

    pool_stride: int = 2
    """Pooling stride p for slow frames (fast frames use 2p). LLaVA-Video uses 2: 27x27 -> 13x13."""

    newline: NewlineLayout = "grid"
    """Where image_newline embeddings go: "grid" (after every row), "frame" (after every frame),
    "one_token" (once after the video) or "no_token". LLaVA-Video trains with "grid"."""

    slowfast_stride: int = 1
    """SlowFast stride s: frame i is slow iff i % s == 0; 1 means every frame is slow (simple)."""

    frame_token: bool = False
    """Append a learned frame token after every frame (after its newlines)."""

    def __post_init__(self) -> None:
        if self.pool_mode not in POOL_MODES:
            raise LayoutError(f"pool_mode must be one of {POOL_MODES}, got {self.pool_mode!r}")
        if self.newline not in NEWLINE_LAYOUTS:
            raise LayoutError(f"newline must be one of {NEWLINE_LAYOUTS}, got {self.newline!r}")
        if not isinstance(self.pool_stride, int) or self.pool_stride < 1:
            raise LayoutError(f"pool_stride must be an integer >= 1, got {self.pool_stride!r}")
        if not isinstance(self.slowfast_stride, int) or self.slowfast_stride < 1:
            raise LayoutError(f"slowfast_stride must be an integer >= 1, got {self.slowfast_stride!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoLayout:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise LayoutError(f"unknown video_layout fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_llava_config(cls, cfg: dict[str, Any]) -> VideoLayout:
        """Map the original LLaVA-NeXT config keys (mm_spatial_pool_mode, mm_spatial_pool_stride,
        mm_newline_position, add_faster_video, faster_token_stride) onto a layout.

        The official code enables SlowFast with add_faster_video=True and faster_token_stride=s, and then
        appends the learned `faster_token` after every frame; we keep both facts.
        """
        mode = cfg.get("mm_spatial_pool_mode", "bilinear")
        newline = cfg.get("mm_newline_position", "grid")
        stride = int(cfg.get("mm_spatial_pool_stride", 2) or 2)
        faster = bool(cfg.get("add_faster_video", False))
        s = int(cfg.get("faster_token_stride", 1) or 1) if faster else 1
        return cls(pool_mode=mode, pool_stride=stride, newline=newline, slowfast_stride=s, frame_token=faster)


def pooled_side(grid: int, stride: int, mode: str) -> int:
    """Side length of a g x g grid after pooling with `stride` (llava_arch.get_2dPool)."""
    if grid < 1:
        raise LayoutError(f"grid must be >= 1, got {grid}")
    if mode == "bilinear":
        return math.ceil(grid / stride)
    if mode in ("average", "max"):
        # avg_pool2d / max_pool2d with kernel == stride floor the output; a grid smaller than the
        # kernel would pool to nothing, which torch rejects, so we reject it here first.
        side = grid // stride
        if side < 1:
            raise LayoutError(f"{mode} pooling with stride {stride} leaves nothing of a {grid}x{grid} grid")
        return side
    raise LayoutError(f"pool_mode must be one of {POOL_MODES}, got {mode!r}")


@dataclass(frozen=True)
class FramePlan:
    """Per-frame token plan: pooled side per frame, and how many tokens each frame and the video take."""

    sides: tuple[int, ...]
    """Pooled side length h of each frame in time order (slow frames: stride p, fast: 2p)."""
    slow: tuple[bool, ...]
    """Whether each frame is slow."""
    tokens_per_frame: tuple[int, ...] = field(default=())
    """Tokens contributed by each frame, newlines and frame token included."""
    trailing: int = 0
    """Tokens after the last frame (1 for the one_token newline)."""

    @property
    def total(self) -> int:
        return sum(self.tokens_per_frame) + self.trailing


def frame_plan(layout: VideoLayout, num_frames: int, grid: int = 27) -> FramePlan:
    """Plan how `num_frames` frames of a `grid` x `grid` patch grid become tokens under `layout`."""
    if num_frames < 1:
        raise LayoutError(f"a video needs at least 1 frame, got num_frames={num_frames}")
    slow = tuple(i % layout.slowfast_stride == 0 for i in range(num_frames))
    slow_side = pooled_side(grid, layout.pool_stride, layout.pool_mode)
    fast_side = pooled_side(grid, 2 * layout.pool_stride, layout.pool_mode)
    sides = tuple(slow_side if is_slow else fast_side for is_slow in slow)
    per_frame = []
    for h in sides:
        n = h * h
        if layout.newline == "grid":
            n += h  # one newline closing every row
        elif layout.newline == "frame":
            n += 1
        if layout.frame_token:
            n += 1
        per_frame.append(n)
    trailing = 1 if layout.newline == "one_token" else 0
    return FramePlan(sides=sides, slow=slow, tokens_per_frame=tuple(per_frame), trailing=trailing)


def num_video_tokens(layout: VideoLayout, num_frames: int, grid: int = 27) -> int:
    """Number of LLM input embeddings a video of `num_frames` frames becomes (the placeholder count)."""
    return frame_plan(layout, num_frames, grid).total


def max_frames_for_budget(layout: VideoLayout, token_budget: int, grid: int = 27, limit: int = 4096) -> int:
    """Largest frame count whose video tokens fit in `token_budget` (0 if not even one frame fits)."""
    best = 0
    lo, hi = 1, limit
    # Token count is monotone in the frame count, so bisect.
    while lo <= hi:
        mid = (lo + hi) // 2
        if num_video_tokens(layout, mid, grid) <= token_budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best
