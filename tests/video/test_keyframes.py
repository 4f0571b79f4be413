"""The fast policy at the keyframe limit (one decoded frame per keyframe hit, the end-of-video rule) and exact
sampling split over independent GOP runs, on videos with and without B-frames and open GOPs."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from videoqa.video import DecodePool, SamplingSpec, probe, sample_frames
from videoqa.video.sampler import plan
from videoqa.video.testing import make_test_video, read_pattern

KINDS = {
    "no_b_frames": {},
    "b_frames": {"bframes": 3},
    "open_gop": {"bframes": 3, "open_gop": True},
}


def _packets(path: Path) -> list[tuple[int, int, bool]]:
    with av.open(str(path)) as c:
        return [(p.pts, p.dts, p.is_keyframe) for p in c.demux(video=0) if p.size]


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind_video(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    # 12 s at 24 fps, a keyframe every 2 s (frames 0, 48, ... 240); frame i shows i mod 256.
    path = make_test_video(tmp_path_factory.mktemp("k") / "v.mp4", seconds=12, fps=24, gop=48, **KINDS[request.param])
    packets = _packets(path)
    reordered = any(pts != dts for pts, dts, _ in packets)
    # Open GOP: the packet decoded right after a keyframe is shown before it (a leading B-frame).
    leading = any(key and nxt[0] < pts for (pts, _, key), nxt in zip(packets, packets[1:], strict=False))
    assert (reordered, leading) == {"no_b_frames": (False, False), "b_frames": (True, False)}.get(
        request.param, (True, True)
    )
    return request.param, path


def _shown(got) -> list[int]:
    return [read_pattern(f) for f in got.frames]


def test_every_keyframe_hit_costs_one_decoded_frame(kind_video: tuple[str, Path]) -> None:
    _, video = kind_video
    assert probe(video).keyframes == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    # Targets 0, 2.0, 4.0, 6.0, 8.0, 10.0 +- a few frames: every one has a keyframe within tolerance.
    got = sample_frames(video, SamplingSpec(fps=0.5, max_frames=64, policy="fast", size=(160, 120)))
    assert got.keyframe_hits == 6 == len(got.timestamps)
    assert got.timings["frames_decoded"] == 6
    assert got.timestamps == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    assert _shown(got) == [0, 48, 96, 144, 192, 240]


def test_a_keyframe_time_float_seconds_cannot_hold_still_seeks_onto_its_keyframe(tmp_path: Path) -> None:
    # Keyframes every 50 frames at 24 fps: 50/24 s is 25600 ticks of 1/12288 s, but 2.0833.. s / (1/12288 s)
    # comes back as 25599.999..., and a backward seek to pts 25599 lands a whole GOP early.
    video = make_test_video(tmp_path / "v.mp4", seconds=10, fps=24, gop=50)
    got = sample_frames(video, SamplingSpec(fps=0.48, max_frames=64, policy="fast", size=(160, 120)))
    assert _shown(got) == [0, 50, 100, 150, 200] and got.keyframe_hits == 5
    assert got.timings["frames_decoded"] == 5


def test_hits_and_misses_return_the_frames_their_timestamps_name(kind_video: tuple[str, Path]) -> None:
    _, video = kind_video
    exact = sample_frames(video, SamplingSpec(fps=12, max_frames=200, policy="exact", size=(160, 120)))
    assert _shown(exact) == [i % 256 for i in range(0, 288, 2)]  # frames just before open-GOP keyframes too
    fast = sample_frames(video, SamplingSpec(num_frames=9, policy="fast", size=(160, 120)))
    assert _shown(fast) == [round(t * 24) % 256 for t in fast.timestamps]
    assert 0 < fast.keyframe_hits < 9
    # Misses are decoded forward from their GOP's keyframe: more than one frame each, less than a full decode.
    assert fast.keyframe_hits < fast.timings["frames_decoded"] < 288


def test_the_last_target_takes_the_last_keyframe_within_one_interval(kind_video: tuple[str, Path]) -> None:
    _, video = kind_video
    # 4 uniform targets: frames 0, 95, 191, 287 = 0, 3.96, 7.96, 11.96 s; interval 3 s, tolerance 1.5 s. The
    # grid ends on the last frame, 1.96 s past the last keyframe (10.0 s): beyond the tolerance, within twice it.
    got = sample_frames(video, SamplingSpec(num_frames=4, policy="fast", size=(160, 120)))
    assert got.timestamps == pytest.approx([0.0, 4.0, 8.0, 10.0]) and _shown(got) == [0, 96, 192, 240]
    assert got.keyframe_hits == 4 and got.timings["frames_decoded"] == 4
    # The time instruction states the real time of the frame returned, not the target's.
    from videoqa.model.prompt import time_instruction

    assert "0.00s,4.00s,8.00s,10.00s." in time_instruction(got.duration, got.timestamps)


def test_the_last_target_is_decoded_exactly_beyond_one_interval_or_when_its_keyframe_is_taken(
    kind_video: tuple[str, Path],
) -> None:
    _, video = kind_video
    # Tolerance 0.9 s: 1.96 s is beyond twice it, so the last frame is decoded (from keyframe 10.0).
    far = sample_frames(video, SamplingSpec(num_frames=4, policy="fast", tolerance_s=0.9, size=(160, 120)))
    assert far.keyframe_hits == 3 and _shown(far)[-1] == 287 % 256 and far.timestamps[-1] == pytest.approx(287 / 24)
    assert far.timings["frames_decoded"] >= 3 + 48
    # 6 targets: 9.54 s takes keyframe 10.0 (0.46 s away), so 11.96 s may not take it a second time.
    taken = sample_frames(video, SamplingSpec(num_frames=6, policy="fast", size=(160, 120)))
    assert taken.timestamps[-2] == pytest.approx(10.0) and _shown(taken)[-1] == 287 % 256
    assert taken.keyframe_hits == 5


def test_a_target_before_the_first_keyframe_takes_the_first_keyframe(tmp_path: Path) -> None:
    # Remux a clip from its 13th packet on (a cut stream): frames 12..47 come before the first keyframe (48).
    src = make_test_video(tmp_path / "src.mkv", seconds=6, fps=24, gop=48, container="matroska")
    cut = tmp_path / "cut.mkv"
    with av.open(str(src)) as inp, av.open(str(cut), "w", format="matroska") as out:
        ostream = out.add_stream_from_template(inp.streams.video[0])
        for i, packet in enumerate(p for p in inp.demux(video=0) if p.size):
            if i >= 12:
                packet.stream = ostream
                out.mux(packet)
    info = probe(cut)
    assert info.keyframes[0] == pytest.approx(1.5)  # 36 frames after the first one
    # 4 targets over 5.5 s: interval 1.375 s, tolerance 0.69 s; target 0 is 1.5 s before the first keyframe.
    got = sample_frames(cut, SamplingSpec(num_frames=4, policy="fast", size=(160, 120)))
    assert got.timestamps[0] == pytest.approx(1.5) and _shown(got)[0] == 48
    assert plan(info, SamplingSpec(num_frames=4))[1][0]  # counted as a keyframe hit, one decoded frame
    assert got.keyframe_hits == sum(plan(info, SamplingSpec(num_frames=4))[1])


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    video = make_test_video(tmp_path_factory.mktemp("p") / "v.mp4", seconds=12, fps=24, gop=48, bframes=2)
    with av.open(str(video)) as c:
        full = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return video, full


def test_exact_in_threads_splits_gop_runs_and_matches_a_full_decode(gop_video) -> None:
    video, full = gop_video
    spec = SamplingSpec(num_frames=11, policy="exact", size=None)
    got = sample_frames(video, spec, workers=3)
    assert got.timings["parts"] == 3
    for frame, idx in zip(got.frames, np.linspace(0, len(full) - 1, 11, dtype=int), strict=True):
        assert np.array_equal(frame, full[idx])
    one = sample_frames(video, spec)
    assert one.timings["parts"] == 1 and one.timestamps == got.timestamps
    assert one.timings["frames_decoded"] == got.timings["frames_decoded"]  # the same work, split


async def test_exact_in_the_pool_splits_over_its_workers_and_matches_a_full_decode(gop_video) -> None:
    video, full = gop_video
    pool = DecodePool(workers=2)
    try:
        got = await pool.sample(video, SamplingSpec(num_frames=11, policy="exact", size=None))
        # A cheap all-hit fast plan stays one task.
        fast = await pool.sample(video, SamplingSpec(fps=0.5, max_frames=64, size=None))
    finally:
        pool.close()
    assert got.timings["parts"] == 2
    for frame, idx in zip(got.frames, np.linspace(0, len(full) - 1, 11, dtype=int), strict=True):
        assert np.array_equal(frame, full[idx])
    assert fast.timings["parts"] == 1 and fast.timings["frames_decoded"] == 6


def test_cli_json_reports_one_decoded_frame_per_hit(gop_video) -> None:
    from videoqa.cli import app

    video, _ = gop_video
    result = CliRunner().invoke(app, ["frames", str(video), "--fps", "0.5", "--size", "32x32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["keyframe_hits"] == report["frames"] == 6 and report["timings"]["frames_decoded"] == 6
