"""Sampling semantics: LLaVA-Video's uniform and fps policies, exact vs fast, timestamps, rotation, VFR."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from videoqa.video import DecodeLimits, SamplingSpec, probe, sample_frames
from videoqa.video.testing import make_test_video, read_pattern


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 10 s at 24 fps, a keyframe every 2 s: frame i shows the number i.
    return make_test_video(tmp_path_factory.mktemp("v") / "gop.mp4", seconds=10, fps=24, gop=48)


def test_probe_reads_headers_and_the_keyframe_index_without_decoding(gop_video: Path) -> None:
    info = probe(gop_video)
    assert (info.width, info.height, info.codec) == (160, 120, "h264")
    assert info.fps == pytest.approx(24.0)
    assert info.duration == pytest.approx(10.0, abs=0.05)
    assert info.num_frames == 240
    assert info.keyframes == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0])


def test_uniform_exact_returns_the_linspace_frames_with_their_real_timestamps(gop_video: Path) -> None:
    got = sample_frames(gop_video, SamplingSpec(num_frames=8, policy="exact", size=(160, 120)))
    expected = np.linspace(0, 239, 8, dtype=int)  # LLaVA-NeXT load_video with force_sample
    assert [read_pattern(f) for f in got.frames] == list(expected)
    assert got.timestamps == pytest.approx([i / 24 for i in expected], abs=1e-3)
    assert got.frames.dtype == np.uint8 and got.frames.shape == (8, 120, 160, 3)


def test_exact_frames_are_pixel_identical_to_a_full_decode(tmp_path: Path) -> None:
    video = make_test_video(tmp_path / "small.mp4", seconds=3, fps=10, gop=12)
    with av.open(str(video)) as c:
        full = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    got = sample_frames(video, SamplingSpec(num_frames=7, policy="exact", size=None))
    for frame, idx in zip(got.frames, np.linspace(0, len(full) - 1, 7, dtype=int), strict=True):
        assert np.array_equal(frame, full[idx])


def test_fps_sampling_takes_every_nth_frame_and_caps_to_uniform(gop_video: Path) -> None:
    one_fps = sample_frames(gop_video, SamplingSpec(fps=1.0, max_frames=64, policy="exact", size=(160, 120)))
    assert [read_pattern(f) for f in one_fps.frames] == list(range(0, 240, 24))
    capped = sample_frames(gop_video, SamplingSpec(fps=4.0, max_frames=5, policy="exact", size=(160, 120)))
    assert [read_pattern(f) for f in capped.frames] == list(np.linspace(0, 239, 5, dtype=int))


def test_fast_takes_keyframes_within_tolerance_and_decodes_less(gop_video: Path) -> None:
    exact = sample_frames(gop_video, SamplingSpec(num_frames=5, policy="exact", size=(160, 120)))
    fast = sample_frames(gop_video, SamplingSpec(num_frames=5, policy="fast", size=(160, 120)))
    # Targets 0, 2.46, 4.96, 7.46, 9.96 s; interval 2 s -> tolerance 1 s; keyframes every 2 s. The last
    # target is 1.96 s from keyframe 8.0, so it is decoded exactly (frame 239).
    assert fast.keyframe_hits == 4
    assert fast.timestamps == pytest.approx([0.0, 2.0, 4.0, 8.0, 239 / 24], abs=1e-3)
    assert read_pattern(fast.frames[-1]) == 239
    assert max(abs(a - b) for a, b in zip(fast.timestamps, exact.timestamps, strict=True)) <= 1.0 + 1e-3
    assert fast.timings["frames_decoded"] < exact.timings["frames_decoded"]
    # A tolerance of zero falls back to exact decoding.
    strict = sample_frames(gop_video, SamplingSpec(num_frames=5, policy="fast", tolerance_s=0.0, size=(160, 120)))
    assert [read_pattern(f) for f in strict.frames] == [read_pattern(f) for f in exact.frames]


def test_rotated_video_comes_out_upright(tmp_path: Path) -> None:
    video = make_test_video(tmp_path / "portrait.mp4", seconds=1, fps=8, size=(160, 120), rotate_clockwise=True)
    got = sample_frames(video, SamplingSpec(num_frames=3, policy="exact", size=None))
    assert got.frames.shape == (3, 160, 120, 3)  # displayed portrait
    upright_to_stored = np.rot90(got.frames, k=1, axes=(1, 2))  # undo the clockwise display turn
    assert [read_pattern(f) for f in upright_to_stored] == [0, 3, 7]
    squashed = sample_frames(video, SamplingSpec(num_frames=2, size=(64, 32)))
    assert squashed.frames.shape == (2, 32, 64, 3)


def test_variable_frame_rate_uses_real_timestamps(tmp_path: Path) -> None:
    # 20 frames whose gaps alternate 1/24 s and 5/24 s (pts in 1/96 s units).
    pts, t = [], 0
    for i in range(20):
        pts.append(t)
        t += 4 if i % 2 == 0 else 20
    video = make_test_video(tmp_path / "vfr.mkv", seconds=20 / 24, fps=24, container="matroska", pts_jitter=pts)
    got = sample_frames(video, SamplingSpec(fps=2.0, max_frames=64, policy="exact", size=(160, 120)))
    real = {p / 96: i for i, p in enumerate(pts)}
    for frame, ts in zip(got.frames, got.timestamps, strict=True):
        nearest = min(real, key=lambda x: abs(x - ts))
        assert abs(nearest - ts) < 0.01  # a timestamp the file really has
        assert read_pattern(frame) == real[nearest]  # and the frame shown at it


class _NoSeek(io.RawIOBase):
    """A write-only, unseekable sink: the Matroska muxer cannot go back to write the Duration element."""

    def __init__(self, sink: io.BufferedWriter) -> None:
        self.sink = sink

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.sink.write(data)


def test_missing_duration_is_estimated_from_packets(tmp_path: Path) -> None:
    src = make_test_video(tmp_path / "src.mkv", seconds=3, fps=10, gop=10, container="matroska")
    streamed = tmp_path / "streamed.mkv"
    with open(streamed, "wb") as raw, av.open(str(src)) as inp, av.open(_NoSeek(raw), "w", format="matroska") as out:
        ostream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = ostream
                out.mux(packet)
    with av.open(str(streamed)) as c:
        assert c.duration is None and c.streams.video[0].duration is None  # really no duration anywhere
    info = probe(streamed)
    assert info.duration == pytest.approx(3.0, abs=0.01) and info.num_frames == 30
    got = sample_frames(streamed, SamplingSpec(num_frames=4, policy="exact", size=(160, 120)))
    assert [read_pattern(f) for f in got.frames] == list(np.linspace(0, 29, 4, dtype=int))


def test_timestamps_feed_the_time_instruction(gop_video: Path) -> None:
    from videoqa.model.prompt import time_instruction

    got = sample_frames(gop_video, SamplingSpec(num_frames=3, policy="exact", size=(32, 32)))
    text = time_instruction(got.duration, got.timestamps)
    assert text.startswith("The video lasts for 10.00 seconds, and 3 frames")
    assert "0.00s,4.96s,9.96s." in text


def test_spec_validation_and_cache_key() -> None:
    with pytest.raises(ValueError, match="num_frames"):
        SamplingSpec(num_frames=0)
    with pytest.raises(ValueError, match="policy"):
        SamplingSpec(policy="quick")  # type: ignore[arg-type]
    assert SamplingSpec(num_frames=8).cache_key() == SamplingSpec(num_frames=8).cache_key()
    assert SamplingSpec(num_frames=8).cache_key() != SamplingSpec(num_frames=8, policy="exact").cache_key()
    assert DecodeLimits().max_pixels > 1920 * 1080


def test_a_known_probe_skips_the_packet_pass_and_gives_the_same_frames(gop_video: Path) -> None:
    info = probe(gop_video)
    spec = SamplingSpec(num_frames=6, policy="fast", size=(160, 120))
    cold = sample_frames(gop_video, spec)
    warm = sample_frames(gop_video, spec, info=info)
    assert warm.timestamps == cold.timestamps and np.array_equal(warm.frames, cold.frames)


def _b_frame_mp4(path: Path) -> Path:
    # x264 with B-frames: packets are stored in decode order, keyframes are shown 2 frames after they decode.
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.options = {"preset": "medium", "bf": "3", "x264-params": "keyint=20:scenecut=0"}
        for i in range(100):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 2, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("kind", ["gop", "b_frames", "vfr", "audio"])
def test_the_mp4_sample_table_gives_the_same_index_as_a_packet_pass(kind: str, tmp_path: Path) -> None:
    from videoqa.video.sampler import _Deadline, _keyframes_from_index, _keyframes_from_packets

    path = {
        "gop": lambda: make_test_video(tmp_path / "v.mp4", seconds=5, fps=24, gop=30),
        "b_frames": lambda: _b_frame_mp4(tmp_path / "v.mp4"),
        "vfr": lambda: make_test_video(
            tmp_path / "v.mp4",
            seconds=2,
            fps=10,
            gop=7,
            pts_jitter=[0, 3, 5, 9, 12, 20, 21, 24, 30, 33, 36, 40, 41, 47, 50, 52, 58, 60, 66, 70],
        ),
        "audio": lambda: make_test_video(tmp_path / "v.mp4", seconds=3, fps=25, gop=10, audio=True),
    }[kind]()
    with av.open(str(path)) as c:
        from_index = _keyframes_from_index(c, c.streams.video[0], path.stat().st_size)
    with av.open(str(path)) as c:
        from_packets = _keyframes_from_packets(c, c.streams.video[0], DecodeLimits(), _Deadline(30), 0.0)
    assert from_index is not None
    keyframes, count, end = from_index
    assert keyframes == pytest.approx(sorted(from_packets[0]), abs=1e-6) and len(keyframes) > 1
    assert count == from_packets[1] and end == pytest.approx(from_packets[2], abs=0.11)


def test_a_truncated_mp4_is_not_trusted_to_its_sample_table(tmp_path: Path) -> None:
    from videoqa.video.sampler import _keyframes_from_index

    data = make_test_video(tmp_path / "v.mp4", seconds=4, fps=24, gop=24, faststart=True).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the moov (at the start) lists samples past the new EOF
    with av.open(str(cut)) as container:
        assert _keyframes_from_index(container, container.streams.video[0], cut.stat().st_size) is None


# --- the exact rule and the limits, on small PyAV-made videos with known frame times ------------------------------


@pytest.fixture(scope="module")
def uneven_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """12 frames at uneven, known times (pts in 1/32 s): bursts and gaps, so targets land between frames."""
    pts = [0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35]
    path = make_test_video(
        tmp_path_factory.mktemp("uneven") / "uneven.mkv", seconds=12 / 8, fps=8, container="matroska", pts_jitter=pts
    )
    return path, [p / 32 for p in pts]


@pytest.mark.parametrize(
    "spec", [SamplingSpec(num_frames=5, policy="exact", size=None), SamplingSpec(fps=3.0, policy="exact", size=None)]
)
def test_exact_takes_the_frame_shown_at_each_target(uneven_video: tuple[Path, list[float]], spec: SamplingSpec) -> None:
    """The frame on screen at time t is the last one whose time is <= t (not the nearest, not the next)."""
    from videoqa.video.sampler import target_times

    path, times = uneven_video
    targets, _ = target_times(probe(path), spec)
    shown = [max(i for i, ft in enumerate(times) if ft <= t + 1e-4) for t in targets]
    following = [min((i for i, ft in enumerate(times) if ft >= t - 1e-4), default=len(times) - 1) for t in targets]
    assert shown != following  # some target falls between two frames: the rule is really exercised
    got = sample_frames(path, spec)
    assert [read_pattern(f) for f in got.frames] == shown
    assert got.timestamps == pytest.approx([times[i] for i in shown], abs=1e-3)


def test_the_decode_deadline_stops_a_long_decode(gop_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler's own deadline, checked as frames are decoded. Its clock is made to run one second per look, so
    the decode of 240 real frames outlasts a 5 s deadline deterministically (FFmpeg's own I/O timeout is untouched)."""
    import itertools
    import time
    from types import SimpleNamespace

    import videoqa.video.sampler as sampler
    from videoqa.video.errors import DecodeTimeoutError

    info = probe(gop_video)  # known probe: no packet pass, so the check that fires is the decode loop's
    spec = SamplingSpec(fps=24.0, max_frames=240, policy="exact", size=(32, 24))
    clock = itertools.count(0.0, 1.0)
    monkeypatch.setattr(sampler, "time", SimpleNamespace(monotonic=lambda: next(clock), perf_counter=time.perf_counter))
    with pytest.raises(DecodeTimeoutError, match="longer than 5 s"):
        sample_frames(gop_video, spec, DecodeLimits(timeout_s=5), info=info)
    clock = itertools.count(0.0, 0.0)  # a clock that stands still: the same decode finishes
    assert sample_frames(gop_video, spec, DecodeLimits(timeout_s=5), info=info).frames.shape[0] == 240


def test_too_many_streams_and_unaccepted_codecs_are_refused_naming_the_limit(tmp_path: Path) -> None:
    from videoqa.video.errors import TooManyStreamsError, UnsupportedCodecError

    with_audio = make_test_video(tmp_path / "av.mp4", seconds=1, fps=8, audio=True)  # a video and an audio stream
    with pytest.raises(TooManyStreamsError, match="2 streams, over the limit of 1") as info:
        sample_frames(with_audio, SamplingSpec(num_frames=2), DecodeLimits(max_streams=1))
    assert info.value.http_status in (413, 415, 422)
    assert sample_frames(with_audio, SamplingSpec(num_frames=2), DecodeLimits(max_streams=2)).frames.shape[0] == 2
    with pytest.raises(UnsupportedCodecError, match="'h264' is not accepted; accepted: vp9") as info:
        sample_frames(with_audio, SamplingSpec(num_frames=2), DecodeLimits(allowed_codecs=("vp9",)))
    assert info.value.http_status == 415
