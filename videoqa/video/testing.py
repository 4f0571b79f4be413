"""Make test videos with PyAV (tests and benchmarks of every package use these; no files are shipped)."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """A frame whose pixels encode its index: 8 vertical bars, each black or white by one bit of the index,
    robust to lossy coding, plus a gradient so frames are not trivially compressible."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = np.linspace(40, 200, width, dtype=np.uint8)[None, :, None]
    bar = max(width // 8, 1)
    for bit in range(8):
        img[: height // 2, bit * bar : (bit + 1) * bar] = 255 if (index >> bit) & 1 else 0
    return img


def read_pattern(img: np.ndarray) -> int:
    """Recover the index drawn by frame_pattern (from a frame at any size)."""
    h, w = img.shape[:2]
    bar = w / 8
    value = 0
    for bit in range(8):
        x = int((bit + 0.5) * bar)
        if img[h // 4, x].mean() > 127:
            value |= 1 << bit
    return value


def make_test_video(
    path: str | Path,
    seconds: float = 4.0,
    fps: int = 24,
    size: tuple[int, int] = (160, 120),
    codec: str = "libx264",
    gop: int | None = None,
    container: str | None = None,
    pix_fmt: str = "yuv420p",
    pattern: bool = True,
    audio: bool = False,
    pts_jitter: list[int] | None = None,
    faststart: bool = False,
    rotate_clockwise: bool = False,
    bframes: int = 0,
    open_gop: bool = False,
    time_base: Fraction | None = None,
) -> Path:
    """Encode a video whose frame i shows frame_pattern(i). `gop` = keyframe interval in frames.

    pts_jitter: explicit pts per frame (in `time_base` units, 1/fps/4 by default), for variable-frame-rate files
    and streams that start after 0.
    bframes / open_gop (libx264): up to `bframes` B-frames between references (packets then leave the muxer in
    decode order, pts != dts); open_gop lets the frames shown just before a keyframe reference the previous GOP
    (x264's open-gop: recovery-point I-frames instead of IDRs).
    rotate_clockwise: write an MP4 display matrix saying "show this turned 90 degrees clockwise" (what phones
    write for portrait clips); PyAV cannot set it, so the tkhd box is patched after muxing.
    """
    path = Path(path)
    width, height = size
    n = max(int(round(seconds * fps)), 1)
    tb = time_base or Fraction(1, fps * 4)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream), f"{codec} is not a video codec"  # PyAV types by codec literal
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
            opts = {"g": str(gop), "keyint_min": str(gop)}
            if codec == "libx264":
                opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
                if bframes or open_gop:
                    opts["x264-params"] += f":bframes={bframes}:open-gop={int(open_gop)}"
            stream.codec_context.options = {**stream.codec_context.options, **opts}
        if codec in ("libx264", "libx265"):
            stream.codec_context.options = {**stream.codec_context.options, "preset": "ultrafast"}
        if pts_jitter is not None:
            stream.codec_context.time_base = tb
        astream = out.add_stream("aac", rate=16000) if audio else None
        for i in range(n):
            img = frame_pattern(i, width, height) if pattern else np.zeros((height, width, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts_jitter is not None:
                frame.pts = pts_jitter[i]
                frame.time_base = tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if astream is not None:
            samples = int(seconds * 16000)
            for start in range(0, samples, 1024):
                chunk = np.zeros((1, min(1024, samples - start)), dtype=np.float32)
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate = 16000
                af.pts = start
                for packet in astream.encode(af):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    if rotate_clockwise:
        _patch_tkhd_matrix(path, [0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000])
    return path


def _patch_tkhd_matrix(path: Path, matrix: list[int]) -> None:
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    if i < 0:
        raise ValueError(f"{path} has no tkhd box (rotation needs an MP4/MOV container)")
    version = data[i + 4]
    # version/flags, times, track id, reserved, duration, reserved(8), layer, group, volume, reserved
    offset = i + 4 + 4 + (8 + 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4) + 8 + 8
    data[offset : offset + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))
