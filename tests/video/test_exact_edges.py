"""The exact rule at its edges: where the target grid starts, targets before the first frame that can be decoded,
targets just before a frame boundary, and frame times rounded to a coarse time base (Matroska's 1 ms). Frames
are made with PyAV; frame i shows the number i (videoqa.video.testing.frame_pattern)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videoqa.video import SamplingSpec, probe, sample_frames
from videoqa.video.sampler import target_times
from videoqa.video.testing import make_test_video, read_pattern

SIZE = (160, 120)
CONTAINERS = {"mkv": "matroska", "mp4": "mp4"}


def _shown(got) -> list[int]:
    return [read_pattern(f) for f in got.frames]


@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_the_grid_and_the_timestamps_count_from_the_video_streams_start(ext: str, tmp_path: Path) -> None:
    """A video stream that starts 1 s into the file (its first frame, a keyframe, at pts 1.0 s; audio from 0): the
    grid's time 0 is that first frame, not the file's 0, so no target lies before it; the first target is the first
    frame, with timestamp 0.0 (timestamps are seconds from the video's start)."""
    pts = [96 + 4 * i for i in range(48)]  # 1/96 s ticks: frame i at 1.0 + i/24 s
    video = make_test_video(
        tmp_path / f"late.{ext}", seconds=2, fps=24, gop=12, container=CONTAINERS[ext], audio=True, pts_jitter=pts
    )
    with av.open(str(video)) as c:
        assert c.start_time == 0 and c.streams.video[0].start_time * c.streams.video[0].time_base == 1
    info = probe(video)
    assert info.start_time == pytest.approx(1.0) and info.keyframes == pytest.approx([0.0, 0.5, 1.0, 1.5])
    exact = sample_frames(video, SamplingSpec(num_frames=5, policy="exact", size=SIZE))
    expected = list(np.linspace(0, 47, 5, dtype=int))
    assert _shown(exact) == expected
    assert exact.timestamps == pytest.approx([i / 24 for i in expected], abs=1e-3)
    # fast, targets 0, 0.5, 1.0, 1.5 s: each is a keyframe (one decoded frame), the first is frame 0, stamped 0.0.
    fast = sample_frames(video, SamplingSpec(fps=2, max_frames=64, policy="fast", size=SIZE))
    assert _shown(fast) == [0, 12, 24, 36] and fast.timestamps == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=1e-6)
    assert fast.keyframe_hits == 4 and fast.timings["frames_decoded"] == 4


def _cut(src: Path, dst: Path, fmt: str, first_packet: int) -> Path:
    """Remux from packet `first_packet` on: the stream starts with frames whose keyframe is gone."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt) as out:
        ostream = out.add_stream_from_template(inp.streams.video[0])
        for i, packet in enumerate(p for p in inp.demux(video=0) if p.size):
            if i >= first_packet:
                packet.stream = ostream
                out.mux(packet)
    return dst


@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_exact_targets_before_the_first_frame_take_the_first_frame(ext: str, tmp_path: Path) -> None:
    """A stream cut mid-GOP starts (0.5 s into the source) with 36 frames that cannot be decoded; the first frame
    it shows is keyframe 48, 1.5 s after the stream's start. Every exact target before it takes that frame, stamped
    with its own time (1.5 s), and the targets after it take the frame shown at them."""
    fmt = CONTAINERS[ext]
    src = make_test_video(tmp_path / f"src.{ext}", seconds=6, fps=24, gop=48, container=fmt)
    cut = _cut(src, tmp_path / f"cut.{ext}", fmt, 12)
    with av.open(str(cut)) as c:
        assert read_pattern(next(c.decode(video=0)).to_ndarray(format="rgb24")) == 48  # 12..47 do not decode
    info = probe(cut)
    assert info.start_time == pytest.approx(0.5) and info.keyframes[0] == pytest.approx(1.5)
    # Every frame: target i/24 s is frame 12 + i's time.
    got = sample_frames(cut, SamplingSpec(fps=24, max_frames=500, policy="exact", size=SIZE))
    expected = [max(12 + i, 48) for i in range(132)]
    assert _shown(got) == expected
    assert got.timestamps == pytest.approx([(f - 12) / 24 for f in expected], abs=1e-3)
    # A sparse grid: only its first target (0 s) lies before the first frame.
    few = sample_frames(cut, SamplingSpec(num_frames=3, policy="exact", size=SIZE))
    assert _shown(few) == [48, 12 + 65, 12 + 131] and few.timestamps[0] == pytest.approx(1.5, abs=1e-3)


def _boundaries(path: Path, ext: str, bframes: int) -> tuple[Path, list[float]]:
    """11 frames 100 ms apart from 1.0 s on (1 ms ticks); each odd frame 3 ms late, so the 10 fps grid's odd
    targets fall 3 ms before a frame boundary (the last frame is on time: the file's average rate stays 10 fps,
    so the grid is k/10 s). Keyframes every 4 frames, so targets cross GOPs."""
    pts = [1000 + 100 * k + (3 if k % 2 else 0) for k in range(11)]
    make_test_video(
        path,
        seconds=1.1,
        fps=10,
        gop=4,
        container=CONTAINERS[ext],
        pts_jitter=pts,
        time_base=Fraction(1, 1000),
        bframes=bframes,
    )
    return path, [(p - 1000) / 1000 for p in pts]


@pytest.mark.parametrize("bframes", [0, 2])
@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_exact_just_before_a_boundary_takes_the_frame_still_shown(ext: str, bframes: int, tmp_path: Path) -> None:
    """On a stream starting at 1.0 s, a target 3 ms before a frame's time takes the frame before it (shown until
    then), not the next one nor the nearest; a target on a frame's time takes that frame."""
    video, times = _boundaries(tmp_path / f"b.{ext}", ext, bframes)
    info = probe(video)
    assert info.start_time == pytest.approx(1.0)
    spec = SamplingSpec(fps=10, max_frames=64, policy="exact", size=SIZE)
    targets, _ = target_times(info, spec)
    assert len(targets) == 11
    for k, t in enumerate(targets):  # the premise: odd targets lie 2-4 ms before frame k, even ones on frame k
        assert (0.002 < times[k] - t < 0.004) if k % 2 else abs(times[k] - t) < 1e-4
    got = sample_frames(video, spec)
    expected = [k - (k % 2) for k in range(11)]
    assert _shown(got) == expected
    assert got.timestamps == pytest.approx([times[k] for k in expected], abs=1e-6)


@pytest.mark.parametrize("fps", [24, 30])
def test_exact_on_a_millisecond_time_base_takes_frame_i_at_index_i(fps: int, tmp_path: Path) -> None:
    """Matroska stores frame times in whole milliseconds: frame i of a 24 or 30 fps file is stored up to 0.5 ms
    after i/fps, the target LLaVA's index i becomes. That rounding is the file's, not a later frame: index i
    still takes frame i, pixel-identical to a full decode (not frame i - 1 for every third index)."""
    video = make_test_video(tmp_path / "ms.mkv", seconds=2, fps=fps, gop=12, container="matroska")
    with av.open(str(video)) as c:
        assert c.streams.video[0].time_base == Fraction(1, 1000)
        full = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    every = sample_frames(video, SamplingSpec(fps=fps, max_frames=500, policy="exact", size=SIZE))
    assert _shown(every) == list(range(2 * fps))
    assert every.timestamps == pytest.approx([round(i * 1000 / fps) / 1000 for i in range(2 * fps)], abs=1e-6)
    got = sample_frames(video, SamplingSpec(num_frames=8, policy="exact", size=None))
    for frame, idx in zip(got.frames, np.linspace(0, len(full) - 1, 8, dtype=int), strict=True):
        assert np.array_equal(frame, full[idx])


@pytest.mark.parametrize("bframes", [0, 2])
def test_mpegts_with_b_frames_decodes_from_the_keyframe_asked_for(bframes: int, tmp_path: Path) -> None:
    """MPEG-TS seeks by decode time onto any packet: with B-frames a keyframe is decoded before it is shown, so a
    seek to its pts landed after it and decoding started at the next GOP (frame 0 came back as frame 24; a
    target in the last GOP found no frame at all: corrupt_video). Stream from 1.0 s, 24 fps, a keyframe every second."""
    pts = [24 + i for i in range(96)]  # 1/24 s ticks
    video = make_test_video(
        tmp_path / "v.ts",
        seconds=4,
        fps=24,
        gop=24,
        container="mpegts",
        bframes=bframes,
        pts_jitter=pts,
        time_base=Fraction(1, 24),
    )
    with av.open(str(video)) as c:
        packets = [(p.pts, p.dts) for p in c.demux(video=0) if p.size]
    assert any(p != d for p, d in packets) == bool(bframes)  # the premise: B-frames reorder
    info = probe(video)
    assert info.start_time == pytest.approx(1.0) and info.keyframes == pytest.approx([0.0, 1.0, 2.0, 3.0])
    every = sample_frames(video, SamplingSpec(fps=24, max_frames=500, policy="exact", size=SIZE))
    assert _shown(every) == list(range(96))
    assert every.timestamps == pytest.approx([i / 24 for i in range(96)], abs=1e-4)
    fast = sample_frames(video, SamplingSpec(num_frames=7, policy="fast", size=SIZE))
    assert _shown(fast) == [round(t * 24) for t in fast.timestamps] and _shown(fast)[0] == 0
    assert _shown(fast)[-1] == 95  # the last target, 1 s past the last keyframe: decoded in the last GOP
