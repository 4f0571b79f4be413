"""PyAV frame sampling: the LLaVA-Video policies, planned per GOP, bounded by limits.

Cost is the number of frames decoded. A probe demuxes packets only (no decoding) to learn the keyframe
index and the real extent of the data; decoding then seeks when the next target lies in a later GOP and
decodes forward when targets are dense. The "fast" policy serves a target from its nearest keyframe when it
is within tolerance (decoding one frame per target), which is what makes a 64-frame sample of a long video
take a fraction of a second.

Semantics of "exact": the frame shown at the target time, i.e. the last frame whose pts <= target (within half a
tick of the stream's time base, which frame times are rounded to; times count from the video stream's start).
Target times: uniform N -> np.linspace(0, total-1, N, dtype=int) / fps (LLaVA-NeXT load_video with
force_sample); fps f -> every round(avg_fps / f)-th frame, or uniform max_frames when there are more.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from videoqa.video import animated
from videoqa.video.errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    NotAVideoError,
    NoVideoStreamError,
    TooManyStreamsError,
    UnsupportedCodecError,
    UnsupportedFormatError,
    VideoError,
    VideoTooLargeError,
    VideoTooLongError,
)
from videoqa.video.types import DecodeLimits, SampledVideo, SamplingSpec, VideoInfo

_MAX_KEYFRAME_READS = 4096  # more keyframes than this in a reordered MP4: one packet pass reads them all instead
_EPS = 1e-4  # seconds: pts -> float rounding slack when comparing frame times with targets


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise DecodeTimeoutError(
                f"decoding took longer than {self.seconds:.0f} s; send a shorter or lower-resolution video"
            )


# FFmpeg recognises almost any bytes as *something*; plain text comes out as ANSI art ("tty") or subtitles.
_TEXT_DEMUXERS = {"tty", "ansi", "srt", "webvtt", "ass", "microdvd", "subviewer", "mpl2", "vplayer", "jacosub"}


def _open(path: Path, limits: DecodeLimits) -> av.container.InputContainer:
    try:
        size = path.stat().st_size
    except OSError as err:
        raise NotAVideoError(f"cannot read the file: {err}") from err
    if size == 0:
        raise NotAVideoError("the file is empty (0 bytes); send a video file")
    if size > limits.max_bytes:
        raise VideoTooLargeError(f"the file has {size} bytes, over the limit of {limits.max_bytes}")
    try:
        container = av.open(str(path), mode="r", options={"probesize": "10000000"}, timeout=limits.timeout_s)
    except av.error.InvalidDataError as err:
        raise NotAVideoError("not a video: no known container format was found in the data") from err
    except (av.error.FFmpegError, OSError) as err:
        raise CorruptVideoError(f"the video could not be opened: {err}") from err
    fmt = container.format.name
    if fmt in _TEXT_DEMUXERS:
        container.close()
        raise NotAVideoError(f"not a video: the data looks like text ({fmt!r}); send a video file")
    if fmt not in limits.allowed_containers:
        container.close()
        kind = "an image" if any(s in fmt for s in ("image", "png", "jpeg", "webp", "bmp")) else "a format"
        raise UnsupportedFormatError(
            f"the data is {kind} ({fmt!r}), not an accepted video container; "
            f"accepted: {', '.join(limits.allowed_containers)}"
        )
    return container


# Decoder implementations -> the codec they decode, so limits name codecs, not libraries.
_DECODER_CODEC = {"libdav1d": "av1", "libaom-av1": "av1", "libvpx-vp9": "vp9", "libvpx": "vp8", "h264_cuvid": "h264"}


def _codec_name(decoder: str) -> str:
    return _DECODER_CODEC.get(decoder, decoder)


def _time_base(stream: av.video.stream.VideoStream) -> Fraction:
    """PyAV types a stream's time base optional (an output stream's is set by the encoder); a demuxed one has it."""
    assert stream.time_base is not None
    return stream.time_base


def _video_stream(container: av.container.InputContainer, limits: DecodeLimits) -> av.video.stream.VideoStream:
    streams = container.streams
    if len(streams) == 0:
        raise CorruptVideoError("the container holds no streams: the file is truncated or its index is missing")
    if len(streams) > limits.max_streams:
        raise TooManyStreamsError(f"the file has {len(streams)} streams, over the limit of {limits.max_streams}")
    if not streams.video:
        what = "audio only" if streams.audio else "no video stream"
        raise NoVideoStreamError(f"the file has {what}; send a file with a video track")
    stream = streams.video[0]  # the default (first) video stream, as ffmpeg and decord pick it
    ctx = stream.codec_context
    if _codec_name(ctx.name) not in limits.allowed_codecs:
        raise UnsupportedCodecError(
            f"video codec {ctx.name!r} is not accepted; accepted: {', '.join(limits.allowed_codecs)}"
        )
    width, height = ctx.width, ctx.height
    if width <= 0 or height <= 0:
        raise CorruptVideoError("the video stream declares no frame size; the file is damaged")
    if width * height > limits.max_pixels:
        raise VideoTooLargeError(
            f"frames are {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}; "
            "downscale the video"
        )
    # The decoder enforces the same cap if the bitstream disagrees with the container header.
    ctx.options = {"max_pixels": str(limits.max_pixels)}
    # Slice threading speeds up every frame and, unlike frame threading, costs nothing after a seek
    # (measured on 2 cores: exact sampling of a 600 s 720p file 5.8 s -> 5.0 s; frame threading was slower).
    stream.thread_type = "SLICE"
    stream.thread_count = min(os.cpu_count() or 1, 4)
    return stream


def _keyframes_from_index(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, size: int
) -> tuple[list[float], int, float] | None:
    """Keyframe times, frame count and data end from an MP4/MOV sample table, or None to demux instead.

    FFmpeg loads the whole sample table (stts/ctts/stss) when it opens an MP4, so the keyframe index costs no
    packet pass: 600 s of 720p30 in ~20 ms instead of ~90 ms. Index timestamps are decode times; a keyframe is
    shown later by the encoder's reorder delay (B-frames), read from the first keyframe's packet. A table that
    points past the end of the file (a truncated upload) is not trusted: the packet pass finds where data ends.
    """
    if not {"mov", "mp4"} & set(container.format.name.split(",")):
        return None
    entries = stream.index_entries
    n = len(entries)
    if n == 0 or (stream.frames and n != stream.frames):
        return None
    last = entries[n - 1]
    if last.pos < 0 or last.pos + last.size > size:
        return None
    delay = None
    for packet in container.demux(stream):  # the first packets only: the reorder delay of the first keyframe
        if packet.is_keyframe and packet.pts is not None and packet.dts is not None:
            delay = packet.pts - packet.dts
            break
    if delay is None:
        return None
    tb = float(_time_base(stream))
    start = stream.start_time or 0
    shown = [e.timestamp + delay for e in entries if e.is_keyframe]
    if delay and len(shown) > 1:
        if len(shown) > _MAX_KEYFRAME_READS:
            return None
        # With reordering, an open-GOP keyframe (its leading B-frames shown before it) is shown later than
        # its decode time plus the first keyframe's delay. One seek + one packet per keyframe reads its own pts
        # (~0.03 ms each measured, a few times cheaper than demuxing every packet).
        for k, ts in enumerate(shown):
            container.seek(ts, stream=stream, backward=True, any_frame=False)
            at = next(iter(container.demux(stream)), None)
            if at is None or not at.is_keyframe or at.pts is None or at.dts != ts - delay:
                return None
            shown[k] = at.pts
    keyframes = [(ts - start) * tb for ts in shown]
    frame = 1 / float(stream.average_rate) if stream.average_rate else 0.0
    end = (last.timestamp + delay - start) * tb + frame
    if stream.duration:
        end = max(end, float(stream.duration * _time_base(stream)))
    return keyframes, n, end


def _keyframes_from_packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    limits: DecodeLimits,
    deadline: _Deadline,
    start: float,
) -> tuple[list[float], int, float]:
    """One demux pass (no decoding): keyframe times, packet count and the real extent of the data."""
    tb = float(_time_base(stream))
    keyframes: list[float] = []
    count, end = 0, start
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            t = packet.pts * tb - start
            count += 1
            end = max(end, t + (packet.duration or 0) * tb)
            if packet.is_keyframe:
                keyframes.append(t)
            if count % 256 == 0:
                deadline.check()
                if end > limits.max_duration_s:
                    raise VideoTooLongError(f"the video lasts over the limit of {limits.max_duration_s:.0f} s")
    except av.error.FFmpegError as err:
        if count == 0:
            raise CorruptVideoError(f"no video data could be read: {err}") from err
    if count == 0:
        raise CorruptVideoError("the video stream holds no frames; the file is truncated or damaged")
    return keyframes, count, end


def _probe_open(
    container: av.container.InputContainer, path: Path, limits: DecodeLimits, deadline: _Deadline
) -> VideoInfo:
    stream = _video_stream(container, limits)
    start = float(stream.start_time * _time_base(stream)) if stream.start_time is not None else 0.0
    declared = None
    if stream.duration is not None:
        declared = float(stream.duration * _time_base(stream))
    elif container.duration is not None:
        declared = container.duration / av.time_base
    if declared is not None and declared > limits.max_duration_s:
        raise VideoTooLongError(f"the video lasts {declared:.0f} s, over the limit of {limits.max_duration_s:.0f} s")

    indexed = _keyframes_from_index(container, stream, path.stat().st_size)
    if indexed is not None:
        keyframes, count, end = indexed
    else:
        keyframes, count, end = _keyframes_from_packets(container, stream, limits, deadline, start)
    duration = end
    if declared is not None and duration < 0.9 * declared - 1.0:
        raise CorruptVideoError(
            f"the file is truncated: its index declares {declared:.2f} s but the data ends at {duration:.2f} s"
        )
    keyframes.sort()
    if not keyframes:
        raise CorruptVideoError("the video has no keyframe, so no frame can be decoded")
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else count / max(duration, 1e-6)
    if container.format.name == "gif" and (int(stream.frames) or count) < 2:
        raise UnsupportedFormatError("the data is a still image ('gif'), not a video; send a video file")
    rotation = 0
    try:
        rotation = int(float(stream.metadata.get("rotate", 0)))
    except ValueError:
        rotation = 0
    return VideoInfo(
        container=container.format.name,
        codec=_codec_name(stream.codec_context.name),
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        fps=fps,
        duration=duration,
        num_frames=int(stream.frames) or count,
        bytes=path.stat().st_size,
        rotation=rotation,
        has_audio=bool(container.streams.audio),
        keyframes=keyframes,
        start_time=start,
    )


def probe(path: str | os.PathLike[str], limits: DecodeLimits | None = None) -> VideoInfo:
    """Validate a file against `limits` and describe it, without decoding any frame."""
    limits = limits or DecodeLimits()
    if animated.is_animated_webp(path):
        return animated.probe(path, limits)
    deadline = _Deadline(limits.timeout_s)
    container = _open(Path(path), limits)
    try:
        return _probe_open(container, Path(path), limits, deadline)
    finally:
        container.close()


def target_times(info: VideoInfo, spec: SamplingSpec) -> tuple[list[float], float]:
    """Target presentation times (seconds) and the sampling interval, per the LLaVA-Video policies."""
    total = max(info.num_frames, 1)
    fps = info.fps
    measured = total / max(info.duration, 1e-6)
    if not fps > 0 or abs(total / fps - info.duration) > 0.1 * info.duration + 2.0 / fps:
        # The declared rate disagrees with the data (a 1 fps header over frames 10 minutes apart): index -> time
        # must follow the packets, or every target would land in the first seconds.
        fps = measured

    def uniform(n: int) -> list[float]:
        idx = np.linspace(0, total - 1, n, dtype=int)
        return [min(i / fps, info.duration) for i in idx]

    if spec.fps is not None:
        step = max(round(fps / spec.fps), 1)  # LLaVA-NeXT: frame_idx = range(0, total, round(avg_fps / fps))
        times = [i / fps for i in range(0, total, step)]
        if len(times) > spec.max_frames:
            times = uniform(spec.max_frames)
    else:
        times = uniform(int(spec.num_frames or 1))
    interval = info.duration / max(len(times), 1)
    return times, interval


def _to_rgb(
    frame: av.VideoFrame, size: tuple[int, int] | None, scaler: VideoReformatter, threads: int = 1
) -> np.ndarray:
    rot = getattr(frame, "rotation", 0) or 0
    k = int(round(rot / 90)) % 4
    w, h = (None, None) if size is None else (size if k % 2 == 0 else (size[1], size[0]))  # resize, then rotate
    # One reformatter per file keeps swscale's context (filters built once): 2.6 ms instead of 7-23 ms per
    # 720p -> 384x384 bicubic frame with frame.to_ndarray, which builds a new one each call; same pixels.
    # swscale threads come from DecodeLimits.scale_threads (2 halves a 720p -> 384x384 bicubic resize, 2.6 ->
    # 0.8 ms on 2 cores; set 1 when every core already runs a busy decode worker).
    arr = scaler.reformat(
        frame, width=w, height=h, format="rgb24", interpolation="BICUBIC", threads=threads
    ).to_ndarray()
    if k:
        # `rotation` is the display matrix's counter-clockwise angle (an iPhone portrait clip says -90, i.e.
        # show it turned 90 degrees clockwise); turning the pixels by it shows them upright.
        arr = np.ascontiguousarray(np.rot90(arr, k=k))
    return arr


class _Decoder:
    """Seeks and decodes one stream, counting the packets it feeds the decoder (the honest cost: a B-frame
    decoder holds frames back, so frames *out* undercount the work)."""

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        info: VideoInfo,
        deadline: _Deadline,
    ) -> None:
        self.container, self.stream, self.info, self.deadline = container, stream, info, deadline
        self.tb = float(_time_base(stream))
        self.decoded = 0

    def time(self, frame: av.VideoFrame) -> float:
        return (frame.pts * self.tb - self.info.start_time) if frame.pts is not None else float(frame.time or 0.0)

    def seek(self, t: float) -> int:
        # round, not int: a keyframe time rebuilt from float seconds can fall a hair short of its integer pts,
        # and a backward seek from pts-1 lands on the keyframe BEFORE it (a whole extra GOP decoded).
        pts = round((t + self.info.start_time) / self.tb)
        self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)  # also flushes the decoder
        return pts

    def forward(self, t: float) -> Iterator[av.VideoFrame]:
        """Frames in presentation order from the keyframe at or before `t` on."""
        pts = self.seek(t)
        ctx = self.stream.codec_context
        packets = self.container.demux(self.stream)
        first = next(packets, None)
        if first is not None and first.size and not first.is_keyframe:
            # MPEG-TS seeks by decode time, onto any packet: with B-frames a keyframe is decoded before it is shown,
            # so a seek to its pts lands after it and decoding would start at the next GOP. Seek back past any
            # reorder delay (H.264 allows 16 frames; the decoder skips packets up to a keyframe, and frames of an
            # earlier GOP are shown before any target here, so they are never chosen).
            self.container.seek(pts - round(1.0 / self.tb), stream=self.stream, backward=True, any_frame=False)
            packets, first = self.container.demux(self.stream), None
        for packet in itertools.chain([first] if first is not None else [], packets):
            if packet.size:  # the empty packet demux yields at the end drains the decoder
                self.decoded += 1
                if self.decoded % 32 == 0:
                    self.deadline.check()
            yield from ctx.decode(packet if packet.size else None)

    def keyframe(self, t: float) -> av.VideoFrame | None:
        """The keyframe at `t` alone: one packet in, the decoder drained, one frame out; None when the seek does
        not land on that keyframe's packet or the decoder gives nothing (the caller then decodes forward)."""
        pts = self.seek(t)
        ctx = self.stream.codec_context
        for packet in self.container.demux(self.stream):
            if not packet.size or not packet.is_keyframe or packet.pts != pts:
                return None
            self.decoded += 1
            # Draining instead of feeding the next packets: a decoder with B-frame reorder delay would otherwise
            # decode 1-3 more frames before it lets the keyframe out. The next seek resets the decoder.
            out = ctx.decode(packet) + ctx.decode(None)
            return out[0] if out else None
        return None


def _decode_at(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    info: VideoInfo,
    times: list[float],
    hits: list[bool],
    size: tuple[int, int] | None,
    deadline: _Deadline,
    scale_threads: int = 1,
) -> tuple[list[np.ndarray], list[float], int, int]:
    """Frames at sorted target `times`; returns (frames, their real times, packets decoded, rotation).

    A target flagged in `hits` is a keyframe time and costs one decoded packet; any other target gets the exact
    frame shown at it (the last frame whose pts <= target), decoded forward from its GOP's keyframe.
    """
    frames: list[np.ndarray] = []
    stamps: list[float] = []
    rotation = info.rotation
    dec = _Decoder(container, stream, info, deadline)
    it: Iterator[av.VideoFrame] | None = None
    prev: av.VideoFrame | None = None
    pending: av.VideoFrame | None = None
    scaler = VideoReformatter()
    # A file stores frame times rounded to its time base (whole milliseconds in Matroska/WebM): frame i of a 24 fps
    # file sits up to half a tick after i/24 s, the target index i becomes. A frame within half a tick of the
    # target is the frame at it, not a later one (else index i took frame i - 1 for every third i).
    eps = _EPS + dec.tb / 2

    def emit(chosen: av.VideoFrame) -> None:
        nonlocal rotation
        rotation = int(getattr(chosen, "rotation", 0) or 0)
        frames.append(_to_rgb(chosen, size, scaler, scale_threads))
        stamps.append(round(dec.time(chosen), 6))

    for k, (t, hit) in enumerate(zip(times, hits, strict=True)):
        if k and t == times[k - 1] and hits[k - 1] == hit:  # the same frame asked twice: convert it once
            frames.append(frames[-1])
            stamps.append(stamps[-1])
            continue
        if hit:
            try:
                frame = dec.keyframe(t)
            except av.error.FFmpegError as err:
                raise CorruptVideoError(f"the video data is damaged near {t:.2f} s: {err}") from err
            it, prev, pending = None, None, None  # the decoder was drained: the next target seeks
            if frame is not None:
                emit(frame)
                continue
        gop = info.keyframes[max(bisect.bisect_right(info.keyframes, t + eps) - 1, 0)]
        here = max((dec.time(f) for f in (prev, pending) if f is not None), default=-math.inf)
        if it is None or gop > here + eps:
            # The target's GOP starts beyond where the decoder is: jump there instead of decoding the gap.
            it = dec.forward(gop)
            prev = pending = None
        if pending is not None and dec.time(pending) <= t + eps:
            prev, pending = pending, None
        if pending is None:
            try:
                for frame in it:
                    ft = dec.time(frame)
                    if abs(ft - t) <= eps:  # the frame AT the target: no need to read one more to be sure
                        prev = frame
                        break
                    if ft <= t + eps:
                        prev = frame
                    else:
                        pending = frame
                        break
            except av.error.FFmpegError as err:
                raise CorruptVideoError(f"the video data is damaged near {t:.2f} s: {err}") from err
        chosen = prev if prev is not None else pending  # a target before the first frame takes the first frame
        if chosen is None:
            raise CorruptVideoError(f"no frame could be decoded at {t:.2f} s; the file is truncated or damaged")
        emit(chosen)
    return frames, stamps, dec.decoded, rotation


def plan(info: VideoInfo, spec: SamplingSpec) -> tuple[list[float], list[bool]]:
    """The time to decode for each target (in request order) and whether it is a keyframe hit.

    "fast": a target whose nearest keyframe lies within the tolerance (default half the sampling interval)
    takes that keyframe. The ends of the video (docs/video.md, "The end of the video"):
    - a target before the first keyframe takes the first keyframe (no earlier frame can be decoded without it);
    - a target after the last keyframe takes the last keyframe when it lies within twice the tolerance (one
      sampling interval by default) and no other target already took it. LLaVA's grid pins its last target to
      the very last frame, half an interval later than the middle of its cell, so a keyframe-spaced file
      misses it by up to a GOP and would pay the whole final GOP for a frame its neighbour nearly shows.
    """
    times, interval = target_times(info, spec)
    if spec.policy != "fast":
        return times, [False] * len(times)
    tol = spec.tolerance_s if spec.tolerance_s is not None else interval / 2
    kfs = info.keyframes
    mapped, hits = list(times), [False] * len(times)
    for j, t in enumerate(times):
        i = bisect.bisect_left(kfs, t)
        near = min(kfs[max(i - 1, 0) : i + 1], key=lambda k: abs(k - t))
        if abs(near - t) <= tol + _EPS or t < kfs[0]:
            mapped[j], hits[j] = near, True
    taken = {m for m, h in zip(mapped, hits, strict=True) if h}
    for j, t in enumerate(times):
        if not hits[j] and t > kfs[-1] and t - kfs[-1] <= 2 * tol + _EPS and kfs[-1] not in taken:
            mapped[j], hits[j] = kfs[-1], True
            taken.add(kfs[-1])
    return mapped, hits


def split(info: VideoInfo, times: list[float], hits: list[bool], parts: int, min_cost: int = 64) -> list[range]:
    """Cut sorted targets into at most `parts` contiguous runs of about equal decode cost, only between GOPs,
    so each run decodes independently (own demuxer and decoder) and the frames are those of one full decode.

    Cost is frames to decode: 1 for a keyframe hit, the distance from the GOP's keyframe for the furthest
    target in it. Plans cheaper than `min_cost` frames stay whole (opening the file again costs more).
    """
    n = len(times)
    if parts <= 1 or n <= 1:
        return [range(n)]
    fps = info.fps if info.fps > 0 else 30.0
    gops = [
        info.keyframes[max(bisect.bisect_right(info.keyframes, t + _EPS) - 1, 0)] if not h else math.nan
        for t, h in zip(times, hits, strict=True)
    ]
    cost = []
    for k, (t, g) in enumerate(zip(times, gops, strict=True)):
        if math.isnan(g):
            cost.append(1.0)
        elif k and gops[k - 1] == g:
            cost.append(max((t - times[k - 1]) * fps, 0.0))  # decoding forward from the previous target
        else:
            cost.append((t - g) * fps + 1)
    total = sum(cost)
    if total < min_cost:
        return [range(n)]
    runs: list[range] = []
    start, acc = 0, 0.0
    for k in range(n):
        # A cut before k is allowed unless k continues the previous target's forward decode in the same GOP.
        if k > start and len(runs) < parts - 1 and acc >= total * (len(runs) + 1) / parts and gops[k] != gops[k - 1]:
            runs.append(range(start, k))
            start = k
        acc += cost[k]
    runs.append(range(start, n))
    return runs


def sample_part(
    path: str | os.PathLike[str],
    info: VideoInfo,
    times: list[float],
    hits: list[bool],
    size: tuple[int, int] | None,
    limits: DecodeLimits,
) -> tuple[list[np.ndarray], list[float], int, int]:
    """Decode one run of sorted targets from `split` with its own demuxer and decoder (a thread or a pool
    worker); returns (frames, timestamps, packets decoded, rotation)."""
    deadline = _Deadline(limits.timeout_s)
    container = _open(Path(path), limits)
    try:
        stream = _video_stream(container, limits)
        return _decode_at(container, stream, info, times, hits, size, deadline, limits.scale_threads)
    except VideoError:
        raise
    except av.error.FFmpegError as err:
        raise CorruptVideoError(f"the video could not be decoded: {err}") from err
    finally:
        container.close()


def merge(
    order: list[int], parts: list[tuple[list[np.ndarray], list[float], int, int]]
) -> tuple[np.ndarray, list[float], int, int]:
    """Put the runs' frames (in sorted-target order) back in request order: (frames, stamps, decoded, rotation)."""
    frames = [f for p in parts for f in p[0]]
    stamps = [s for p in parts for s in p[1]]
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return (
        np.stack([frames[i] for i in inverse]),
        [stamps[i] for i in inverse],
        sum(p[2] for p in parts),
        parts[0][3],
    )


@dataclass(frozen=True)
class RunPlan:
    """A sampling plan in decode order, cut into GOP runs: what `sample_frames` and `DecodePool.sample` decode."""

    order: list[int]  # order[k] = index of the k-th target in the caller's order
    times: list[float]  # decode times, sorted
    flags: list[bool]  # keyframe hit per sorted target
    runs: list[range]  # slices of `times` decoded independently
    hits: int


def plan_runs(info: VideoInfo, spec: SamplingSpec, workers: int) -> RunPlan:
    mapped, hits = plan(info, spec)
    order = sorted(range(len(mapped)), key=mapped.__getitem__)
    times = [mapped[i] for i in order]
    flags = [hits[i] for i in order]
    return RunPlan(order, times, flags, split(info, times, flags, workers), sum(hits))


def sampled_video(
    info: VideoInfo, frames: np.ndarray, stamps: list[float], decoded: int, runs: RunPlan, t0: float, t1: float
) -> SampledVideo:
    """The result of a decode that started at t0 (perf_counter) and finished probing at t1."""
    t2 = time.perf_counter()
    return SampledVideo(
        frames=frames,
        timestamps=stamps,
        duration=info.duration,
        info=info,
        timings={
            "probe_s": t1 - t0,
            "decode_s": t2 - t1,
            "total_s": t2 - t0,
            "frames_decoded": float(decoded),
            "parts": float(len(runs.runs)),
        },
        keyframe_hits=runs.hits,
    )


def sample_frames(
    path: str | os.PathLike[str],
    spec: SamplingSpec | None = None,
    limits: DecodeLimits | None = None,
    info: VideoInfo | None = None,
    workers: int = 1,
) -> SampledVideo:
    """Sample frames from `path` per `spec`, in-process (use DecodePool in servers).

    `workers`: decode independent GOP runs in up to this many threads (see `split`); pixels are the same.

    `info`: this file's own earlier `probe` (the gateway keeps it from upload, files being named by content
    hash); it skips the packet pass that finds the keyframes. Limits on streams, codecs and pixels are still
    checked on open.
    """
    spec = spec or SamplingSpec()
    limits = limits or DecodeLimits()
    if animated.is_animated_webp(path):
        return animated.sample(path, spec, limits)
    deadline = _Deadline(limits.timeout_s)
    t0 = time.perf_counter()
    path = Path(path)
    container = _open(path, limits)
    try:
        if info is None or not info.keyframes:
            info = _probe_open(container, path, limits, deadline)
        else:
            _video_stream(container, limits)
            info = VideoInfo(**{**info.__dict__, "keyframes": sorted(info.keyframes)})
        t1 = time.perf_counter()
        stream = container.streams.video[0]
        rp = plan_runs(info, spec, workers)
        order, times, flags, runs = rp.order, rp.times, rp.flags, rp.runs
        with ThreadPoolExecutor(max(len(runs) - 1, 1)) as threads:
            # Runs after the first go to threads, each with its own demuxer and decoder (PyAV drops the GIL while
            # FFmpeg decodes and swscale converts, so independent GOPs decode on all cores); the first run
            # decodes here meanwhile, on the container already open.
            futures = [
                threads.submit(
                    sample_part, path, info, times[r.start : r.stop], flags[r.start : r.stop], spec.size, limits
                )
                for r in runs[1:]
            ]
            head = runs[0]
            first = _decode_at(
                container,
                stream,
                info,
                times[: head.stop],
                flags[: head.stop],
                spec.size,
                deadline,
                limits.scale_threads,
            )
            rest = [f.result() for f in futures]
        frames, stamps, decoded, rotation = merge(order, [first, *rest])
        info.rotation = rotation
    except VideoError:
        raise
    except av.error.FFmpegError as err:
        raise CorruptVideoError(f"the video could not be decoded: {err}") from err
    finally:
        container.close()
    return sampled_video(info, frames, stamps, decoded, rp, t0, t1)
