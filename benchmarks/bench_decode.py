"""Decode benchmark: this sampler (fast, exact) against decord (as LLaVA-NeXT calls it) and vLLM's OpenCV
loader, on videos made here with PyAV. Prints a table of seconds and speed-up ratios and writes a bar chart.

    python benchmarks/bench_decode.py [--frames 64] [--cache DIR] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from videoqa.video import SamplingSpec, sample_frames

console = Console(width=170)  # the table has 9 columns; do not wrap them in a pipe or CI log


def make_long_video(path: Path, seconds: int, fps: int = 30, size=(1280, 720), gop_s: float = 8.3) -> Path:
    """A camera-like 720p H.264 clip with long GOPs: a smooth textured background panning, with moving blocks.

    Smooth (low-frequency) texture, like real footage; per-pixel noise would make every frame, keyframes
    above all, unrealistically expensive to decode. Cached: it takes a minute or two to encode.
    """
    if path.exists():
        return path
    tmp = path.with_suffix(".part.mp4")
    w, h = size
    rng = np.random.default_rng(0)
    coarse = rng.integers(30, 225, (h // 16 + 1, (w * 2) // 16 + 1, 3)).astype(np.float32)
    base = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:h, : w * 2]
    k = np.ones(15, np.float32) / 15  # blur the blocks into a smooth texture
    base = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, base)
    base = np.apply_along_axis(lambda c: np.convolve(c, k, mode="same"), 0, base).astype(np.uint8)
    with av.open(str(tmp), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        gop = int(round(gop_s * fps))
        s.codec_context.options = {
            "preset": "ultrafast",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            "crf": "28",
        }
        for i in track(range(seconds * fps), description=f"encoding {path.name}", console=console):
            x = (i * 3) % w
            img = np.ascontiguousarray(base[:, x : x + w])
            for j in range(4):  # a few objects crossing the frame
                cx, cy = (i * (4 + j) + 300 * j) % (w - 80), (200 + 120 * j + i * (j - 1)) % (h - 80)
                img[cy : cy + 80, cx : cx + 80] = (60 * j, 255 - 50 * j, 120)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    tmp.rename(path)
    return path


def ours(policy: str, frames: int, fps: float | None = None) -> Callable[[Path], int]:
    spec = SamplingSpec(num_frames=frames, fps=fps, max_frames=frames, policy=policy, size=(384, 384))

    def run(path: Path) -> int:
        return len(sample_frames(path, spec).frames)

    return run


def decord_loader(frames: int) -> Callable[[Path], int]:
    def run(path: Path) -> int:
        from decord import VideoReader, cpu

        vr = VideoReader(str(path), ctx=cpu(0), num_threads=1)  # LLaVA-NeXT's load_video
        idx = np.linspace(0, len(vr) - 1, frames, dtype=int).tolist()
        return len(vr.get_batch(idx).asnumpy())

    return run


def opencv_loader(frames: int) -> Callable[[Path], int]:
    def run(path: Path) -> int:
        from vllm.multimodal.video import VideoBackend

        out, _ = VideoBackend.load_bytes(path.read_bytes(), num_frames=frames, backend="opencv")
        return len(out)

    return run


def timeit(fn: Callable[[Path], int], path: Path, repeat: int, expect: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        got = fn(path)
        times.append(time.perf_counter() - t)
        if got != expect:  # a loader that returns fewer frames is not doing the same work
            raise RuntimeError(f"returned {got} frames, expected {expect}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("VIDEOQA_CACHE_DIR", "~/.cache/videoqa")).expanduser() / "bench",
    )
    ap.add_argument("--quick", action="store_true", help="a 60 s long video instead of 600 s")
    ap.add_argument("--plot", type=Path, default=Path("benchmarks/decode.png"))
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    long_s = 60 if args.quick else 600
    videos = {
        f"{long_s} s 720p30, 8.3 s GOPs": (
            make_long_video(args.cache / f"long_{long_s}s_v2.mp4", long_s),
            args.frames,
            2,
            None,
        ),
        "10 s 720p30 clip, 2 s GOPs": (
            make_long_video(args.cache / "short_10s_v2.mp4", 10, gop_s=2.0),
            args.frames,
            3,
            None,
        ),
        "120 s at 1 fps sampling (fps=1 -> 64 cap)": (
            make_long_video(args.cache / "mid_120s_v2.mp4", 120, gop_s=4.0),
            64,
            2,
            1.0,
        ),
    }
    loaders = {
        # Baselines take uniform n: LLaVA-NeXT's fps path falls back to exactly that when fps gives more than n.
        "ours fast": lambda n, fps: ours("fast", n, fps),
        "ours exact": lambda n, fps: ours("exact", n, fps),
        "decord": lambda n, fps: decord_loader(n),
        "vLLM OpenCV": lambda n, fps: opencv_loader(n),
    }
    results: dict[str, dict[str, float]] = {}
    for name, (path, n, repeat, fps) in videos.items():
        results[name] = {}
        path.read_bytes()  # into the page cache first: whichever loader ran first would otherwise pay for the disk
        for label, make in loaders.items():
            try:
                results[name][label] = timeit(make(n, fps), path, repeat, n)
            except Exception as err:  # a missing optional loader must not hide the rest
                console.print(f"[yellow]{label} failed on {name}: {err}")
                results[name][label] = float("nan")

    table = Table(title=f"Frame sampling, {args.frames} uniform frames (median seconds; x = speed-up of ours)")
    for col in ["video", *loaders, "fast vs decord", "fast vs OpenCV", "exact vs decord", "exact vs OpenCV"]:
        table.add_column(col, justify="right")
    for name, r in results.items():
        table.add_row(
            name,
            *(f"{r[k]:.3f}" for k in loaders),
            f"{r['decord'] / r['ours fast']:.1f}x",
            f"{r['vLLM OpenCV'] / r['ours fast']:.1f}x",
            f"{r['decord'] / r['ours exact']:.1f}x",
            f"{r['vLLM OpenCV'] / r['ours exact']:.1f}x",
        )
    console.print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.2
    for j, label in enumerate(loaders):
        ax.bar([i + j * width for i in range(len(results))], [r[label] for r in results.values()], width, label=label)
    ax.set_xticks([i + 1.5 * width for i in range(len(results))], list(results), fontsize=8)
    ax.set_ylabel("seconds (lower is better)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Frame sampling time")
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120)
    console.print(f"chart: {args.plot}")


if __name__ == "__main__":
    main()
