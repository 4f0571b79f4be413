"""A corpus of bad and unusual inputs, made here: each gets its typed error or correct frames, in bounded time,
through the worker pool, which keeps serving afterwards."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videoqa.video import DecodeLimits, DecodePool, SamplingSpec
from videoqa.video.errors import (
    CorruptVideoError,
    DecoderCrashedError,
    DecodeTimeoutError,
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedFormatError,
    VideoError,
    VideoTooLargeError,
    VideoTooLongError,
)
from videoqa.video.testing import make_test_video, read_pattern

SPEC = SamplingSpec(num_frames=4, size=(64, 48))
LIMITS = DecodeLimits(timeout_s=20.0, max_memory_bytes=3 * 1024**3)


@pytest.fixture(scope="module")
def pool() -> Iterator[DecodePool]:
    p = DecodePool(workers=2, limits=LIMITS)
    yield p
    p.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        files[name] = d / name
        files[name].write_bytes(data)

    write("zero.mp4", b"")
    write("random.mp4", np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(png, format="PNG")
    write("image.png", png.getvalue())
    write("notes.txt", b"this is not a video\n" * 200)
    files["moov_at_end.mp4"] = make_test_video(d / "moov_at_end.mp4", seconds=4, fps=12, gop=12)
    files["faststart.mp4"] = make_test_video(d / "faststart.mp4", seconds=4, fps=12, gop=12, faststart=True)
    for src, tag in (("moov_at_end.mp4", "end"), ("faststart.mp4", "start")):
        data = files[src].read_bytes()
        for frac in (0.1, 0.5, 0.9):
            write(f"cut_{tag}_{int(frac * 100)}.mp4", data[: int(len(data) * frac)])
    files["two_streams.mkv"] = _two_video_streams(d / "two_streams.mkv")
    files["audio_only.m4a"] = _audio_only(d / "audio_only.m4a")
    files["huge.mp4"] = make_test_video(d / "huge.mp4", seconds=2 / 8, fps=8, size=(4352, 4352), pattern=False)
    files["one_pixel.mp4"] = make_test_video(d / "one_pixel.mp4", seconds=1, fps=8, size=(1, 1), pix_fmt="yuv444p")
    files["hevc10.mp4"] = make_test_video(d / "hevc10.mp4", seconds=1, fps=8, codec="libx265", pix_fmt="yuv420p10le")
    files["vp9.webm"] = make_test_video(d / "vp9.webm", seconds=1, fps=8, codec="libvpx-vp9", container="webm")
    files["av1.mp4"] = make_test_video(d / "av1.mp4", seconds=1, fps=8, codec="libsvtav1", size=(160, 128))
    files["rotated.mp4"] = make_test_video(d / "rotated.mp4", seconds=1, fps=8, rotate_clockwise=True)
    files["ten_hours.mkv"] = _ten_hours_one_pixel(d / "ten_hours.mkv")
    return files


def _two_video_streams(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        a = out.add_stream("libx264", rate=8)
        b = out.add_stream("libx264", rate=8)
        for s, (w, h) in ((a, (160, 120)), (b, (64, 48))):
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        from videoqa.video.testing import frame_pattern

        for i in range(8):
            for s in (a, b):
                frame = av.VideoFrame.from_ndarray(frame_pattern(i, s.width, s.height), format="rgb24")
                for p in s.encode(frame):
                    out.mux(p)
        for s in (a, b):
            for p in s.encode():
                out.mux(p)
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000)
        for start in range(0, 16000, 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, start
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def _ten_hours_one_pixel(path: Path) -> Path:
    # 61 frames, one every 10 minutes: 10 hours of 1x1 video in a few hundred bytes.
    with av.open(str(path), "w", format="matroska") as out:
        s = out.add_stream("libx264", rate=1)
        s.width = s.height = 1
        s.pix_fmt = "yuv444p"
        s.codec_context.time_base = Fraction(1, 1)
        for i in range(61):
            frame = av.VideoFrame.from_ndarray(np.full((1, 1, 3), i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i * 600, Fraction(1, 1)
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


ERRORS = {
    "zero.mp4": NotAVideoError,
    "random.mp4": NotAVideoError,
    "image.png": UnsupportedFormatError,
    "notes.txt": NotAVideoError,
    "audio_only.m4a": NoVideoStreamError,
    "huge.mp4": VideoTooLargeError,
    "ten_hours.mkv": VideoTooLongError,
    "cut_start_50.mp4": CorruptVideoError,
    "cut_start_90.mp4": CorruptVideoError,
}
GOOD = [
    "moov_at_end.mp4",
    "faststart.mp4",
    "two_streams.mkv",
    "one_pixel.mp4",
    "hevc10.mp4",
    "vp9.webm",
    "av1.mp4",
    "rotated.mp4",
]


@pytest.mark.parametrize("name", sorted(ERRORS))
async def test_bad_inputs_get_their_typed_error(pool: DecodePool, corpus: dict[str, Path], name: str) -> None:
    with pytest.raises(ERRORS[name]) as info:  # a typed error, not DecodeTimeoutError after LIMITS.timeout_s
        await pool.sample(corpus[name], SPEC)
    assert info.value.http_status in (413, 415, 422) and info.value.code and len(str(info.value)) > 10


@pytest.mark.parametrize("name", ["cut_end_10.mp4", "cut_end_50.mp4", "cut_end_90.mp4", "cut_start_10.mp4"])
async def test_truncated_files_are_refused_as_not_a_video_or_corrupt(pool, corpus, name: str) -> None:
    # Without its index (moov at the end, cut off) an MP4 cannot be recognised at all.
    with pytest.raises((NotAVideoError, CorruptVideoError)):
        await pool.sample(corpus[name], SPEC)


@pytest.mark.parametrize("policy", ["exact", "fast"])
@pytest.mark.parametrize("name", GOOD)
async def test_unusual_but_valid_inputs_give_correct_frames(pool: DecodePool, corpus, name: str, policy) -> None:
    got = await pool.sample(corpus[name], SamplingSpec(num_frames=4, policy=policy, size=(160, 120)))
    assert got.frames.shape == (4, 120, 160, 3) and got.frames.dtype == np.uint8
    assert got.timestamps == sorted(got.timestamps)
    assert all(0.0 <= t <= got.duration for t in got.timestamps)
    if name == "one_pixel.mp4":
        # frame_pattern on a 1x1 frame is only its gradient's first value, 40: every output pixel must be that grey.
        assert np.abs(got.frames.astype(int) - 40).max() <= 8
        return
    frames = got.frames
    if name == "rotated.mp4":
        # Shown turned 90 degrees clockwise, as its display matrix says: turning it back restores the vertical bars.
        frames = np.stack([np.rot90(f, k=1) for f in frames])
    shown = [read_pattern(f) for f in frames]
    # Every frame is the one its timestamp says (fast may move a target to a keyframe, never lie about it).
    assert shown == [round(t * got.info.fps) for t in got.timestamps]
    if policy == "exact":
        total = round(got.info.duration * got.info.fps)
        assert shown == list(np.linspace(0, total - 1, 4, dtype=int))


async def test_pool_kills_a_hung_worker_and_keeps_serving(tmp_path: Path) -> None:
    p = DecodePool(workers=1, limits=DecodeLimits(timeout_s=0.5))
    try:
        with pytest.raises(DecodeTimeoutError):
            await p._run(time.sleep, 30)  # stands in for a decoder stuck in C
        assert p.restarts == 1
        video = make_test_video(tmp_path / "ok.mp4", seconds=1, fps=8)
        assert (await p.sample(video, SPEC)).frames.shape[0] == 4
    finally:
        p.close()


async def test_pool_survives_a_crashed_worker(pool: DecodePool, corpus) -> None:
    with pytest.raises(DecoderCrashedError):
        await pool._run(os._exit, 1)  # stands in for a segfault or an OOM kill
    got = await pool.sample(corpus["faststart.mp4"], SPEC)
    assert got.frames.shape[0] == 4


async def test_a_memory_bomb_hits_the_worker_limit_not_the_server(pool: DecodePool, corpus) -> None:
    with pytest.raises(VideoTooLargeError, match="memory limit"):
        await pool._run(bytearray, 8 * 1024**3)  # stands in for a decoder allocating past RLIMIT_AS
    assert (await pool.sample(corpus["faststart.mp4"], SPEC)).frames.shape[0] == 4


async def test_ten_hours_within_a_raised_limit_is_sampled(corpus) -> None:
    from videoqa.video import sample_frames

    got = sample_frames(corpus["ten_hours.mkv"], SPEC, DecodeLimits(max_duration_s=11 * 3600))
    assert got.duration == pytest.approx(36000, rel=0.02)
    assert got.frames.shape == (4, 48, 64, 3) and got.timestamps == sorted(got.timestamps)
    # Its header claims 1 fps; the targets must still spread over the ten hours, not the first four seconds.
    assert got.timestamps[0] == 0.0 and got.timestamps[-1] > 30000


async def test_typed_errors_cross_the_process_boundary(pool: DecodePool, corpus) -> None:
    with pytest.raises(VideoError) as info:
        await pool.probe(corpus["notes.txt"])
    assert type(info.value) is NotAVideoError and info.value.code == "not_a_video"
