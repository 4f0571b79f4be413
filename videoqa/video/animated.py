"""Animated WebP as a video: FFmpeg (PyAV) decodes only still WebP, so animated ones are read with Pillow,
under the same limits and sampling policy as every other video (animated GIF goes through PyAV itself).

A still WebP is refused like any other image on the video endpoints; `image_as_video` is for chat `image_url`
parts, where an image is asked for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from videoqa.video.errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    UnsupportedFormatError,
    VideoTooLargeError,
    VideoTooLongError,
)
from videoqa.video.types import DecodeLimits, SampledVideo, SamplingSpec, VideoInfo

CONTAINER = "webp_anim"
"""The container name animated WebP files are registered and limited under (DecodeLimits.allowed_containers)."""


def is_animated_webp(path: str | os.PathLike[str]) -> bool:
    """RIFF/WEBP with a VP8X header whose animation flag is set (WebP container spec, "Extended format")."""
    try:
        with open(path, "rb") as f:
            head = f.read(21)
    except OSError:
        return False
    return (
        len(head) == 21
        and head[:4] == b"RIFF"
        and head[8:12] == b"WEBP"
        and head[12:16] == b"VP8X"
        and bool(head[20] & 0x02)
    )


def _open(path: Path, limits: DecodeLimits):  # noqa: ANN202 - a PIL image
    from PIL import Image

    if CONTAINER not in limits.allowed_containers:
        raise UnsupportedFormatError(
            f"the data is an animated WebP, not an accepted video container; accepted: "
            f"{', '.join(limits.allowed_containers)}"
        )
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise VideoTooLargeError(f"the file has {size} bytes, over the limit of {limits.max_bytes}")
    try:
        image = Image.open(path)
    except Exception as err:  # Pillow raises many types on damaged data
        raise CorruptVideoError(f"the animated WebP could not be opened: {err}") from err
    width, height = image.size
    if width * height > limits.max_pixels:
        image.close()
        raise VideoTooLargeError(
            f"frames are {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}; "
            "downscale the video"
        )
    return image


def _frame_starts(image, limits: DecodeLimits, deadline: float) -> list[float]:  # noqa: ANN001
    """Start time (s) of every frame, from the per-frame durations (reading them decodes each frame)."""
    starts, t = [], 0.0
    for i in range(getattr(image, "n_frames", 1)):
        if time.monotonic() > deadline:
            raise DecodeTimeoutError(f"decoding took longer than {limits.timeout_s:.0f} s; send a shorter video")
        image.seek(i)
        image.load()  # Pillow reads a WebP frame's duration when it decodes the frame
        starts.append(t)
        t += max(float(image.info.get("duration", 0) or 0), 10.0) / 1000  # browsers show 0 ms frames as 10 ms
        if t > limits.max_duration_s:
            raise VideoTooLongError(f"the video lasts over the limit of {limits.max_duration_s:.0f} s")
    starts.append(t)  # the end
    return starts


def _info(path: Path, image, starts: list[float]) -> VideoInfo:  # noqa: ANN001
    frames, duration = len(starts) - 1, starts[-1]
    if frames < 2:
        raise UnsupportedFormatError("the data is a still image ('webp'), not a video; send a video file")
    return VideoInfo(
        container=CONTAINER,
        codec="webp",
        width=image.size[0],
        height=image.size[1],
        fps=frames / max(duration, 1e-6),
        duration=duration,
        num_frames=frames,
        bytes=path.stat().st_size,
        rotation=0,
        has_audio=False,
        keyframes=[round(s, 6) for s in starts[:-1]],  # every frame decodes on its own
        start_time=0.0,
    )


def probe(path: str | os.PathLike[str], limits: DecodeLimits) -> VideoInfo:
    path = Path(path)
    deadline = time.monotonic() + limits.timeout_s
    with _open(path, limits) as image:
        return _info(path, image, _frame_starts(image, limits, deadline))


def sample(path: str | os.PathLike[str], spec: SamplingSpec, limits: DecodeLimits) -> SampledVideo:
    """The frames shown at the sampler's target times (videoqa.video.sampler.target_times), resized like
    every other video's."""
    import bisect

    from PIL import Image

    from videoqa.video.sampler import target_times

    path = Path(path)
    t0 = time.perf_counter()
    deadline = time.monotonic() + limits.timeout_s
    with _open(path, limits) as image:
        starts = _frame_starts(image, limits, deadline)
        info = _info(path, image, starts)
        times, _ = target_times(info, spec)
        frames, stamps = [], []
        for t in times:
            index = min(max(bisect.bisect_right(starts, t + 1e-6) - 1, 0), info.num_frames - 1)
            image.seek(index)
            rgb = image.convert("RGB")
            if spec.size is not None:
                rgb = rgb.resize(spec.size, Image.Resampling.BICUBIC)
            frames.append(np.asarray(rgb, dtype=np.uint8))
            stamps.append(round(starts[index], 6))
    total = time.perf_counter() - t0
    return SampledVideo(
        frames=np.stack(frames), timestamps=stamps, duration=info.duration, info=info, timings={"total_s": total}
    )


def image_as_video(path: str | Path, spec: SamplingSpec, limits: DecodeLimits) -> SampledVideo:
    """A still image (PNG, JPEG, WebP, GIF...) as a one-frame video at t=0, for chat `image_url` parts: for
    LLaVA-Video an image is a video of one frame. Same byte and pixel limits as videos."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise VideoTooLargeError(f"the image has {size} bytes, over the limit of {limits.max_bytes}")
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as err:
        raise UnsupportedFormatError(f"not an image Pillow can read: {err}") from err
    with image:
        width, height = image.size
        if width * height > limits.max_pixels:
            raise VideoTooLargeError(
                f"the image is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}"
            )
        try:
            rgb = image.convert("RGB")
        except (OSError, ValueError) as err:
            raise CorruptVideoError(f"the image could not be decoded: {err}") from err
    if spec.size is not None:
        rgb = rgb.resize(spec.size, Image.Resampling.BICUBIC)
    info = VideoInfo(
        container=image.format or "image",
        codec=(image.format or "image").lower(),
        width=width,
        height=height,
        fps=1.0,
        duration=0.0,
        num_frames=1,
        bytes=size,
        rotation=0,
        has_audio=False,
        keyframes=[0.0],
        start_time=0.0,
    )
    return SampledVideo(frames=np.asarray(rgb, dtype=np.uint8)[None], timestamps=[0.0], duration=0.0, info=info)
