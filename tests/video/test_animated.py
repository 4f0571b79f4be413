"""Animated GIF and animated WebP decode as videos (same sampler policy and limits); still images are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videoqa.video import DecodeLimits, SamplingSpec, probe, sample_frames
from videoqa.video.errors import UnsupportedFormatError, VideoTooLargeError


def _frames(n: int = 6) -> list[Image.Image]:
    return [Image.fromarray(np.full((64, 80, 3), (40 * i) % 256, np.uint8)) for i in range(n)]


def _animation(path: Path, n: int = 6, ms: int = 100) -> Path:
    frames = _frames(n)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return path


@pytest.mark.parametrize("suffix", ["gif", "webp"])
def test_animations_are_probed_and_sampled_at_their_real_times(tmp_path: Path, suffix: str) -> None:
    path = _animation(tmp_path / f"clip.{suffix}")
    info = probe(path)
    assert info.num_frames == 6 and info.duration == pytest.approx(0.6) and (info.width, info.height) == (80, 64)
    got = sample_frames(path, SamplingSpec(num_frames=4, policy="exact", size=(32, 32)), info=info)
    assert got.frames.shape == (4, 32, 32, 3)
    assert got.timestamps == pytest.approx([0.0, 0.1, 0.3, 0.5])
    assert got.frames[:, 0, 0, 0].tolist() == [0, 40, 120, 200]  # the frame shown at each time


@pytest.mark.parametrize("suffix", ["gif", "webp"])
def test_still_images_stay_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"still.{suffix}"
    _frames(1)[0].save(path)
    with pytest.raises(UnsupportedFormatError, match="image"):
        probe(path)


@pytest.mark.parametrize("suffix", ["gif", "webp"])
def test_animations_obey_the_decode_limits(tmp_path: Path, suffix: str) -> None:
    path = _animation(tmp_path / f"clip.{suffix}")
    with pytest.raises(VideoTooLargeError, match="pixels"):
        probe(path, DecodeLimits(max_pixels=80 * 63))
    with pytest.raises(UnsupportedFormatError):
        probe(path, DecodeLimits(allowed_containers=("matroska,webm",)))


@pytest.mark.parametrize("suffix", ["gif", "webp"])
def test_the_decode_pool_serves_animations_like_videos(tmp_path: Path, suffix: str) -> None:
    """The gateway's path: probe at upload, then sampling in the workers with that probe."""
    import asyncio

    from videoqa.video import DecodePool

    path = _animation(tmp_path / f"clip.{suffix}", n=30, ms=50)
    pool = DecodePool(2, DecodeLimits())

    async def run():
        info = await pool.probe(path)
        return info, await pool.sample(path, SamplingSpec(num_frames=8, policy="exact", size=(32, 32)), info)

    try:
        info, got = asyncio.run(run())
    finally:
        pool.close()
    assert info.num_frames == 30 and info.duration == pytest.approx(1.5)
    assert got.frames.shape == (8, 32, 32, 3) and got.timestamps == sorted(got.timestamps)
