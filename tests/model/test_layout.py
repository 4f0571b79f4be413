"""Token-count math and the packing function (issue: model core)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from videoqa.model.layout import (
    NEWLINE_LAYOUTS,
    POOL_MODES,
    LayoutError,
    VideoLayout,
    frame_plan,
    max_frames_for_budget,
    num_video_tokens,
)
from videoqa.model.packing import pack_video


@pytest.mark.parametrize(
    ("frames", "layout", "expected"),
    [
        # 64 frames, average 13x13, a newline closing each of the 13 rows: 64 * 13 * 14
        (64, VideoLayout("average", 2, "grid", 1), 11648),
        # bilinear 14x14, one newline after the video: 64 * 196 + 1
        (64, VideoLayout("bilinear", 2, "one_token", 1), 12545),
        # 32 * 169
        (32, VideoLayout("average", 2, "no_token", 1), 5408),
        # s=3: 22 slow frames (0,3,...,63) at 13*14 and 42 fast frames at 6*7 (27 // 4 = 6)
        (64, VideoLayout("average", 2, "grid", 3), 22 * 182 + 42 * 42),
        (64, VideoLayout("average", 2, "frame", 1), 64 * 170),
        (64, VideoLayout("max", 2, "no_token", 2, frame_token=True), 32 * 170 + 32 * 37),
        # bilinear fast frames: ceil(27 / 4) = 7
        (4, VideoLayout("bilinear", 2, "grid", 2), 2 * 14 * 15 + 2 * 7 * 8),
    ],
)
def test_token_counts_match_hand_derived_numbers(frames: int, layout: VideoLayout, expected: int) -> None:
    assert num_video_tokens(layout, frames, grid=27) == expected


def test_slowfast_s3_is_5768() -> None:
    assert num_video_tokens(VideoLayout("average", 2, "grid", 3), 64) == 5768


def test_slowfast_fits_twice_the_frames_of_simple_in_the_paper_budget() -> None:
    # Paper Table 9: ~5.4K visual tokens: simple fits 32 frames, SlowFast (s=3 here) fits 64.
    simple = VideoLayout("average", 2, "no_token", 1)
    slowfast = VideoLayout("average", 2, "no_token", 3)
    assert max_frames_for_budget(simple, 5408) == 32
    assert max_frames_for_budget(slowfast, 5408) >= 64


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pool_mode": "mean"}, "pool_mode"),
        ({"newline": "row"}, "newline"),
        ({"pool_stride": 0}, "pool_stride"),
        ({"slowfast_stride": 0}, "slowfast_stride"),
    ],
)
def test_bad_layout_values_are_named(kwargs: dict, field: str) -> None:
    with pytest.raises(LayoutError, match=field):
        VideoLayout(**kwargs)


def test_zero_frames_and_unknown_fields_are_rejected() -> None:
    with pytest.raises(LayoutError, match="num_frames=0"):
        num_video_tokens(VideoLayout(), 0)
    with pytest.raises(LayoutError, match="bogus"):
        VideoLayout.from_dict({"bogus": 1})


def test_from_llava_config_maps_the_original_keys() -> None:
    cfg = {
        "mm_spatial_pool_mode": "average",
        "mm_spatial_pool_stride": 2,
        "mm_newline_position": "grid",
        "add_faster_video": True,
        "faster_token_stride": 3,
    }
    assert VideoLayout.from_llava_config(cfg) == VideoLayout("average", 2, "grid", 3, frame_token=True)
    assert VideoLayout.from_llava_config({"mm_spatial_pool_mode": "bilinear"}).slowfast_stride == 1


layouts = st.builds(
    VideoLayout,
    pool_mode=st.sampled_from(POOL_MODES),
    pool_stride=st.integers(1, 3),
    newline=st.sampled_from(NEWLINE_LAYOUTS),
    slowfast_stride=st.integers(1, 4),
    frame_token=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(layout=layouts, frames=st.integers(1, 70), grid=st.sampled_from([9, 13, 27]))
def test_packing_length_equals_the_count_for_every_layout(layout: VideoLayout, frames: int, grid: int) -> None:
    dim = 4
    features = torch.randn(frames, grid * grid, dim)
    packed = pack_video(features, layout, grid, torch.randn(dim), torch.randn(dim))
    assert packed.shape == (num_video_tokens(layout, frames, grid), dim)


def test_slow_and_fast_frames_stay_interleaved_in_time_order() -> None:
    grid, dim = 8, 1
    layout = VideoLayout("average", 2, "no_token", 2)
    # Frame i is filled with the value i, so pooling keeps it and the sequence shows the frame order.
    features = torch.arange(5, dtype=torch.float32).view(5, 1, 1).expand(5, grid * grid, dim).contiguous()
    packed = pack_video(features, layout, grid, torch.zeros(dim)).flatten().tolist()
    plan = frame_plan(layout, 5, grid)
    assert plan.sides == (4, 2, 4, 2, 4)
    expected = [float(i) for i, h in enumerate(plan.sides) for _ in range(h * h)]
    assert packed == expected


# --- Bit-identity with the simple representation as the official code computes it -----------------
# A literal transcription of LLaVA-NeXT llava_arch.py's get_2dPool + add_token_per_grid /
# add_token_per_frame / one_token / no_token branches for videos, used only as the test oracle.


def _official_simple(features: torch.Tensor, mode: str, stride: int, newline_pos: str, newline: torch.Tensor):
    num_frames, num_tokens, num_dim = features.shape
    height = width = int(math.sqrt(num_tokens))
    x = features.view(num_frames, height, width, -1).permute(0, 3, 1, 2).contiguous()
    if mode == "average":
        x = torch.nn.functional.avg_pool2d(x, stride)
    elif mode == "max":
        x = torch.nn.functional.max_pool2d(x, stride)
    else:
        scaled = [math.ceil(height / stride), math.ceil(width / stride)]
        x = torch.nn.functional.interpolate(x, size=scaled, mode="bilinear")
    x = x.permute(0, 2, 3, 1).view(num_frames, -1, num_dim)
    if newline_pos == "grid":
        resize_h = int(math.sqrt(x.shape[1]))
        f = x.view(num_frames, 1, resize_h, resize_h, -1).permute(4, 0, 2, 1, 3).contiguous()
        f = f.flatten(1, 2).flatten(2, 3)
        f = torch.cat((f, newline[:, None, None].expand(*f.shape[:-1], 1)), dim=-1)
        return f.flatten(1, 2).transpose(0, 1)
    if newline_pos == "frame":
        f = x.permute(2, 0, 1).contiguous()
        f = torch.cat((f, newline[:, None, None].expand(*f.shape[:-1], 1)), dim=-1)
        return f.permute(1, 2, 0).flatten(0, 1)
    if newline_pos == "one_token":
        return torch.cat((x.flatten(0, 1), newline[None]), dim=0)
    return x.flatten(0, 1)


@pytest.mark.parametrize("mode", POOL_MODES)
@pytest.mark.parametrize("newline_pos", NEWLINE_LAYOUTS)
@pytest.mark.parametrize("frames", [1, 7, 16])
def test_s1_packing_is_bit_identical_to_the_official_simple_path(mode: str, newline_pos: str, frames: int) -> None:
    torch.manual_seed(frames)
    grid, dim = 27, 16
    features = torch.randn(frames, grid * grid, dim)
    newline = torch.randn(dim)
    ours = pack_video(features, VideoLayout(mode, 2, newline_pos, 1), grid, newline)
    theirs = _official_simple(features, mode, 2, newline_pos, newline)
    assert torch.equal(ours, theirs)


# --- SlowFast and frame-token packing against an independent oracle ---------------------------------
# The paper's definition (section 4, appendix A.2), transcribed: frame i is slow iff i % s == 0 and is pooled
# p x p, the others are fast and pooled 2p x 2p; frames stay in time order and none appears twice. Each frame is
# pooled on its own with the official simple path above (so the oracle shares no code with pack_video or
# frame_plan); the learned frame token follows each frame after its newlines, as the official (commented-out)
# add_faster_video branch appends faster_token per frame; one_token puts the single newline after the video.


def _paper_slowfast(
    features: torch.Tensor,
    mode: str,
    p: int,
    newline_pos: str,
    s: int,
    newline: torch.Tensor,
    token: torch.Tensor | None,
) -> torch.Tensor:
    per_frame_pos = newline_pos if newline_pos in ("grid", "frame") else "no_token"
    blocks = []
    for i in range(features.shape[0]):
        stride = p if i % s == 0 else 2 * p
        blocks.append(_official_simple(features[i : i + 1], mode, stride, per_frame_pos, newline))
        if token is not None:
            blocks.append(token[None])
    if newline_pos == "one_token":
        blocks.append(newline[None])
    return torch.cat(blocks, dim=0)


@pytest.mark.parametrize("mode", POOL_MODES)
@pytest.mark.parametrize("newline_pos", NEWLINE_LAYOUTS)
@pytest.mark.parametrize(("s", "frame_token"), [(2, False), (3, False), (3, True), (1, True)])
def test_slowfast_and_frame_token_packing_match_the_paper_definition(
    mode: str, newline_pos: str, s: int, frame_token: bool
) -> None:
    torch.manual_seed(s)
    grid, dim, frames = 27, 8, 7
    features = torch.randn(frames, grid * grid, dim)
    newline, token = torch.randn(dim), torch.randn(dim)
    layout = VideoLayout(mode, 2, newline_pos, s, frame_token=frame_token)
    ours = pack_video(features, layout, grid, newline, token if frame_token else None)
    theirs = _paper_slowfast(features, mode, 2, newline_pos, s, newline, token if frame_token else None)
    assert torch.equal(ours, theirs)


def test_slowfast_grid_sequence_by_hand() -> None:
    """3 frames, s=2, 4x4 grid, average p=1 (slow stays 4x4, fast pools 2x2 -> 2x2), grid newlines and a frame
    token: the sequence written out token by token."""
    grid = 4
    features = torch.arange(3 * 16, dtype=torch.float32).view(3, 16, 1)  # frame f, cell c holds 16f + c
    packed = (
        pack_video(
            features,
            VideoLayout("average", 1, "grid", 2, frame_token=True),
            grid,
            torch.tensor([-1.0]),
            torch.tensor([-2.0]),
        )
        .flatten()
        .tolist()
    )
    nl, ft = -1.0, -2.0
    slow0 = [0, 1, 2, 3, nl, 4, 5, 6, 7, nl, 8, 9, 10, 11, nl, 12, 13, 14, 15, nl, ft]
    # frame 1 pooled 2x2: mean of cells {0,1,4,5} = 2.5 (+16), {2,3,6,7} = 4.5, {8,9,12,13} = 10.5, {10,11,14,15} = 12.5
    fast1 = [18.5, 20.5, nl, 26.5, 28.5, nl, ft]
    slow2 = [v + 32 if v not in (nl, ft) else v for v in slow0]
    assert packed == slow0 + fast1 + slow2


def test_layout_error_paths_name_the_problem() -> None:
    from videoqa.model.layout import pooled_side
    from videoqa.model.packing import pool_frames

    with pytest.raises(LayoutError, match="grid must be >= 1, got 0"):
        pooled_side(0, 2, "average")
    with pytest.raises(LayoutError, match="max pooling with stride 4 leaves nothing of a 3x3 grid"):
        num_video_tokens(VideoLayout("max", 2, "grid", 2), 2, grid=3)  # the fast frames pool with 2p = 4
    # bilinear rounds up, so it never empties: a 2x2 slow frame + 2 newlines, a 1x1 fast frame + 1 newline
    assert num_video_tokens(VideoLayout("bilinear", 2, "grid", 2), 2, grid=3) == (2 * 2 + 2) + (1 * 1 + 1)
    with pytest.raises(LayoutError, match="pool_mode must be one of"):
        pooled_side(27, 2, "median")
    with pytest.raises(LayoutError, match=r"expected 9x9=81 features per frame, got 80"):
        pool_frames(torch.zeros(1, 80, 4), 9, 2, "average")
    with pytest.raises(LayoutError, match="frame_token is set but the model has no frame_token"):
        pack_video(torch.zeros(1, 81, 4), VideoLayout(frame_token=True), 9, torch.zeros(4))
    assert max_frames_for_budget(VideoLayout(), 100) == 0  # not even one 27x27 frame (182 tokens) fits
    assert max_frames_for_budget(VideoLayout(), 182) == 1
