"""First-question vs repeat-question latency through the gateway (the repeat skips decoding: frame cache).

    python benchmarks/bench_gateway.py [--url http://127.0.0.1:8000] [--videos 3] [--frames 32]

Without --url it starts `videoqa serve` (embedded engine, default model) on a free port and stops it after.
Test videos are made here with PyAV (720p, 60 s, long GOPs) so decoding is a realistic part of the latency.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from videoqa.video.testing import make_test_video

console = Console()


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoqa.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit("the service did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--policy", default="exact", choices=["fast", "exact"])
    args = ap.parse_args()
    proc, url = (None, args.url) if args.url else start_server()
    try:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.videos):
                # distinct content per video (the id is the content hash)
                video = make_test_video(Path(tmp) / f"v{i}.mp4", seconds=60, fps=30 - i, size=(1280, 720), gop=240)
                with video.open("rb") as f:
                    file_id = httpx.post(f"{url}/v1/files", files={"file": (video.name, f)}, timeout=120).json()["id"]
                body = {"file_id": file_id, "num_frames": args.frames, "policy": args.policy, "max_tokens": 8}
                timings = []
                for q in ("What happens?", "What moves?", "What colour is it?"):
                    start = time.perf_counter()
                    r = httpx.post(f"{url}/v1/video/qa", json=body | {"question": q}, timeout=300)
                    r.raise_for_status()
                    timings.append((time.perf_counter() - start, r.json()["cache_hit"]))
                rows.append(timings)
        table = Table(title=f"Gateway latency, {args.frames} frames ({args.policy}) of a 60 s 720p video, max_tokens 8")
        for col in ("video", "first question (s)", "repeat 1 (s)", "repeat 2 (s)", "speed-up"):
            table.add_column(col, justify="right")
        for i, t in enumerate(rows):
            assert not t[0][1] and t[1][1] and t[2][1], "expected a miss, then cache hits"
            table.add_row(
                str(i),
                f"{t[0][0]:.3f}",
                f"{t[1][0]:.3f}",
                f"{t[2][0]:.3f}",
                f"{t[0][0] / statistics.mean([t[1][0], t[2][0]]):.1f}x",
            )
        console.print(table)
        hits = [
            line for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith("videoqa_frame_cache")
        ]
        console.print("\n".join(hits))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
