"""Decode benchmark: this sampler (fast, exact) against decord (as LLaVA-NeXT calls it) and vLLM's OpenCV
loader, on videos made here with PyAV. Prints a table of seconds and speed-up ratios and writes a bar chart.

    python benchmarks/bench_decode.py [--frames 8 32 64] [--cache DIR] [--quick] [--repeat 3]

On the long video, for each frame count: frames decoded, in-process and whole-process (`videoqa frames` in a
fresh interpreter) seconds for fast and exact, decord and vLLM's OpenCV loader the same two ways, and the
keyframe-only limit (every keyframe of the file decoded with skip_frame=NONKEY, nothing else).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from videoqa.video import SamplingSpec, sample_frames

console = Console(width=230)  # the table has 9 columns; do not wrap them in a pipe or CI log


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
        got = sample_frames(path, spec, workers=os.cpu_count() or 1)
        run.decoded = int(got.timings["frames_decoded"])  # type: ignore[attr-defined]
        return len(got.frames)

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


def keyframes_only(path: Path) -> int:
    """The floor for any keyframe-snapping sampler: decode every keyframe of the file and nothing else."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        stream.thread_type = "SLICE"
        return sum(1 for _ in c.decode(stream))


# Whole-process runs: a fresh interpreter per call, as a data-loading script or a CLI user pays it.
_BASELINE_SCRIPTS = {
    "decord": (
        "import sys, numpy as np\n"
        "from decord import VideoReader, cpu\n"
        "vr = VideoReader(sys.argv[1], ctx=cpu(0), num_threads=1)\n"
        "idx = np.linspace(0, len(vr) - 1, int(sys.argv[2]), dtype=int).tolist()\n"
        "assert len(vr.get_batch(idx).asnumpy()) == int(sys.argv[2])\n"
    ),
    "vLLM OpenCV": (
        "import sys\n"
        "from pathlib import Path\n"
        "from vllm.multimodal.video import VideoBackend\n"
        "out, _ = VideoBackend.load_bytes(Path(sys.argv[1]).read_bytes(), num_frames=int(sys.argv[2]), "
        "backend='opencv')\n"
        "assert len(out) == int(sys.argv[2])\n"
    ),
}


def _child(cmd: list[str]) -> tuple[float, float, str]:
    """Run a fresh process: (wall seconds, CPU seconds user+system, stdout). CPU seconds barely move with the
    machine's load, wall seconds do: on a shared box compare both."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, out


def whole_ours(path: Path, n: int, policy: str) -> tuple[float, float, dict]:
    """`videoqa frames` in a fresh process: wall seconds, CPU seconds and its JSON report."""
    cmd = [sys.executable, "-m", "videoqa.cli", "frames", str(path), "--frames", str(n), "--policy", policy, "--json"]
    wall, cpu, out = _child(cmd)
    return wall, cpu, json.loads(out)


def whole_baseline(label: str, path: Path, n: int) -> tuple[float, float]:
    wall, cpu, _ = _child([sys.executable, "-c", _BASELINE_SCRIPTS[label], str(path), str(n)])
    return wall, cpu


def timeit(fn: Callable[[Path], int], path: Path, repeat: int, expect: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        got = fn(path)
        times.append(time.perf_counter() - t)
        if got != expect:  # a loader that returns fewer frames is not doing the same work
            raise RuntimeError(f"returned {got} frames, expected {expect}")
    return statistics.median(times)


def _safe(what: str, fn: Callable[..., float], *args: object) -> float:
    try:
        return fn(*args)
    except Exception as err:  # a missing optional loader must not hide the rest
        console.print(f"[yellow]{what} failed: {err}")
        return float("nan")


def _safe2(what: str, fn: Callable[..., tuple[float, float]], *args: object) -> tuple[float, float]:
    try:
        return fn(*args)
    except Exception as err:
        console.print(f"[yellow]{what} failed: {err}")
        return float("nan"), float("nan")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 32, 64], help="frame counts for the long video")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("VIDEOQA_CACHE_DIR", "~/.cache/videoqa")).expanduser() / "bench",
    )
    ap.add_argument("--quick", action="store_true", help="a 60 s long video instead of 600 s, no other videos")
    ap.add_argument("--repeat", type=int, default=3, help="in-process runs of ours per cell (median)")
    ap.add_argument("--plot", type=Path, default=Path("benchmarks/decode.png"))
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    long_s = 60 if args.quick else 600
    long_name = f"{long_s} s 720p30, 8.3 s GOPs"
    long_path = make_long_video(args.cache / f"long_{long_s}s_v2.mp4", long_s)
    long_path.read_bytes()  # into the page cache first: whichever loader ran first would otherwise pay for the disk
    start_load = _load().split()[0]
    console.print(f"{os.cpu_count()} CPUs, load average at start: {_load()}")

    limit = statistics.median(_timed(keyframes_only, long_path) for _ in range(3))
    kf_count = keyframes_only(long_path)
    rows: dict[int, dict[str, float]] = {}
    for n in args.frames:
        r: dict[str, float] = {}
        for policy in ("fast", "exact"):
            fn = ours(policy, n)
            r[f"{policy} in"] = timeit(fn, long_path, args.repeat if policy == "fast" else 1, n)
            r[f"{policy} decoded"] = fn.decoded  # type: ignore[attr-defined]
            whole, cpu, report = whole_ours(long_path, n, policy)
            r[f"{policy} whole"], r[f"{policy} cpu"] = whole, cpu
            r[f"{policy} start-up"] = whole - report["timings"]["total_s"]
            r[f"{policy} hits"] = report["keyframe_hits"]
        for label, make in (("decord", decord_loader), ("vLLM OpenCV", opencv_loader)):
            r[f"{label} in"] = _safe(f"{label} in-process", timeit, make(n), long_path, 1, n)
            r[f"{label} whole"], r[f"{label} cpu"] = _safe2(
                f"{label} whole-process", whole_baseline, label, long_path, n
            )
        rows[n] = r
        # Raw figures as each row completes: a long run on a busy box keeps what it measured if stopped.
        console.print(f"  {n} frames done (load {_load()}): " + json.dumps({k: round(v, 4) for k, v in r.items()}))

    table = Table(
        title=f"{long_name}: uniform N frames at 384x384, seconds (in = in-process, whole = fresh process); "
        f"keyframe-only limit: {kf_count} keyframes in {limit:.3f} s"
    )
    cols = ["N", "fast decoded (hits)", "fast in / whole", "start-up", "exact decoded", "exact in / whole"]
    cols += ["decord in / whole", "OpenCV in / whole", "fast vs decord (whole)", "fast in vs kf limit"]
    cols += ["exact vs decord (whole / in)", "fast vs OpenCV (whole)", "CPU s whole: fast / exact / decord / OpenCV"]
    for col in cols:
        table.add_column(col, justify="right")
    for n, r in rows.items():
        table.add_row(
            str(n),
            f"{r['fast decoded']:.0f} ({r['fast hits']:.0f})",
            f"{r['fast in']:.3f} / {r['fast whole']:.3f}",
            f"{r['fast start-up']:.3f}",
            f"{r['exact decoded']:.0f}",
            f"{r['exact in']:.3f} / {r['exact whole']:.3f}",
            f"{r['decord in']:.3f} / {r['decord whole']:.3f}",
            f"{r['vLLM OpenCV in']:.3f} / {r['vLLM OpenCV whole']:.3f}",
            f"{r['decord whole'] / r['fast whole']:.1f}x",
            f"{r['fast in'] / limit:.2f}x",
            f"{r['decord whole'] / r['exact whole']:.1f}x / {r['decord in'] / r['exact in']:.1f}x",
            f"{r['vLLM OpenCV whole'] / r['fast whole']:.1f}x",
            " / ".join(f"{r[f'{k} cpu']:.2f}" for k in ("fast", "exact", "decord", "vLLM OpenCV")),
        )
    console.print(table)

    others: dict[str, dict[str, float]] = {}
    if not args.quick:
        videos = {
            "10 s 720p30 clip, 2 s GOPs": (make_long_video(args.cache / "short_10s_v2.mp4", 10, gop_s=2.0), 64, None),
            "120 s, 4 s GOPs, fps=1 (-> 64 cap)": (
                make_long_video(args.cache / "mid_120s_v2.mp4", 120, gop_s=4.0),
                64,
                1.0,
            ),
        }
        loaders = {
            # Baselines take uniform n: LLaVA-NeXT's fps path falls back to exactly that when fps gives more.
            "ours fast": lambda n, fps: ours("fast", n, fps),
            "ours exact": lambda n, fps: ours("exact", n, fps),
            "decord": lambda n, fps: decord_loader(n),
            "vLLM OpenCV": lambda n, fps: opencv_loader(n),
        }
        for name, (path, n, fps) in videos.items():
            path.read_bytes()
            others[name] = {
                label: _safe(f"{label} on {name}", timeit, make(n, fps), path, 2, n) for label, make in loaders.items()
            }
        table = Table(title="Other videos, 64 frames at 384x384, in-process median seconds")
        for col in ["video", *loaders, "fast vs decord / OpenCV", "exact vs decord / OpenCV"]:
            table.add_column(col, justify="right")
        for name, r in others.items():
            table.add_row(
                name,
                *(f"{r[k]:.3f}" for k in loaders),
                f"{r['decord'] / r['ours fast']:.1f}x / {r['vLLM OpenCV'] / r['ours fast']:.1f}x",
                f"{r['decord'] / r['ours exact']:.1f}x / {r['vLLM OpenCV'] / r['ours exact']:.1f}x",
            )
        console.print(table)
    console.print(f"load average at end: {_load()}")
    _plot(
        args.plot,
        long_name,
        rows,
        limit,
        f" ({os.cpu_count()} CPUs, load average {start_load} -> {_load().split()[0]})",
    )


def _timed(fn: Callable[[Path], int], path: Path) -> float:
    t = time.perf_counter()
    fn(path)
    return time.perf_counter() - t


def _plot(path: Path, long_name: str, rows: dict[int, dict[str, float]], limit: float, note: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    series = ["fast", "exact", "decord", "vLLM OpenCV"]
    width = 0.2
    for ax, kind in zip(axes, ("whole", "in"), strict=True):
        for j, label in enumerate(series):
            ax.bar(
                [i + j * width for i in range(len(rows))],
                [r[f"{label} {kind}"] for r in rows.values()],
                width,
                label=f"ours {label}" if label in ("fast", "exact") else label,
            )
        ax.axhline(limit, color="black", linestyle="--", linewidth=1, label="keyframe-only limit (in-process)")
        ax.set_xticks([i + 1.5 * width for i in range(len(rows))], [f"{n} frames" for n in rows])
        ax.set_yscale("log")
        ax.set_title(f"{'whole process' if kind == 'whole' else 'in-process'}")
    axes[0].set_ylabel("seconds (lower is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.suptitle(f"Frame sampling, {long_name}, 384x384{note}")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    console.print(f"chart: {path}")


if __name__ == "__main__":
    main()
