"""Bursts of concurrent questions against a gateway with a small admission limit: goodput, latency, statuses.

    python benchmarks/bench_load.py [--inflight 4] [--waiting 0,40] [--bursts 2,5,10,24] [--state memory,redis]

Starts one `videoqa engine` (the default checkpoint) and, for each admission setting and state backend, a
gateway (`videoqa serve --engine-url ...`, VIDEOQA_MAX_INFLIGHT=--inflight, VIDEOQA_MAX_WAITING=each of
--waiting). Each burst sends N = multiple x inflight QA requests at once (one uploaded video, 4 frames,
max_tokens --tokens, temperature 0) and waits for every answer. Printed per burst: status counts, goodput
(answers per second of burst wall time), p50/p99 latency of the answers and of the refusals. `redis` state
starts a redis-server on a free port (needs redis-server on PATH). With waiting=0 the gateway refuses as soon
as `inflight` requests are in flight (the behaviour before admission queued).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from videoqa.video.testing import make_test_video

console = Console(width=150)
TOKEN = "bench-load-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become ready")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOQA_")}
    base.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return subprocess.Popen(
        [sys.executable, "-m", "videoqa.cli", *args],
        env=base | {"VIDEOQA_ENGINE_API_TOKEN": TOKEN} | env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def burst(url: str, n: int, body: dict) -> tuple[Counter[int], list[float], list[float], float]:
    """n requests at once; (status counts, answer latencies, refusal latencies, burst wall seconds)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:

        async def one() -> tuple[int, float]:
            start = time.perf_counter()
            r = await client.post("/v1/video/qa", json=body)
            return r.status_code, time.perf_counter() - start

        start = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - start
    counts = Counter(code for code, _ in results)
    return (
        counts,
        [t for code, t in results if code == 200],
        [t for code, t in results if code != 200],
        wall,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--waiting", default="0,40", help="comma-separated VIDEOQA_MAX_WAITING values")
    ap.add_argument("--bursts", default="2,5,10,24", help="burst sizes as multiples of --inflight")
    ap.add_argument("--state", default="memory", help="comma-separated: memory, redis")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--max-wait-s", type=float, default=120.0)
    args = ap.parse_args()
    waiting = [int(w) for w in args.waiting.split(",")]
    multiples = [int(m) for m in args.bursts.split(",")]
    states = args.state.split(",")

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            engine_port = free_port()
            engine = start(["engine", "--port", str(engine_port)], {}, work / "engine.log")
            procs.append(engine)
            engine_url = f"http://127.0.0.1:{engine_port}"
            console.print("starting the engine ...")
            wait_ready(f"{engine_url}/internal/health", engine)
            redis_url = None
            if "redis" in states:
                binary = shutil.which("redis-server")
                if binary is None:
                    raise SystemExit("--state redis needs redis-server on PATH")
                port = free_port()
                procs.append(
                    subprocess.Popen(
                        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                        stdout=subprocess.DEVNULL,
                    )
                )
                redis_url = f"redis://127.0.0.1:{port}/0"
            video = make_test_video(work / "clip.mp4", seconds=4, fps=12, gop=12)
            table = Table(
                title=f"Bursts of QA requests, VIDEOQA_MAX_INFLIGHT={args.inflight}, 4 frames, "
                f"max_tokens {args.tokens}, max_wait_s {args.max_wait_s:g}"
            )
            for col in ("state", "waiting", "burst", "200", "503", "429", "other", "goodput/s", "p50 s", "p99 s"):
                table.add_column(col, justify="right")
            table.add_column("refused p50 s", justify="right")
            for state in states:
                for wait in waiting:
                    env = {
                        "VIDEOQA_ENGINE_URL": engine_url,
                        "VIDEOQA_MAX_INFLIGHT": str(args.inflight),
                        "VIDEOQA_MAX_WAITING": str(wait),
                        "VIDEOQA_MAX_WAIT_S": str(args.max_wait_s),
                        "VIDEOQA_DATA_DIR": str(work / f"data-{state}-{wait}"),
                        "VIDEOQA_JOB_WORKERS": "0",
                    }
                    if state == "redis":
                        env |= {"VIDEOQA_REDIS_URL": redis_url or "", "VIDEOQA_REDIS_NAMESPACE": f"bench{wait}"}
                    port = free_port()
                    gw = start(["serve", "--port", str(port)], env, work / f"gateway-{state}-{wait}.log")
                    procs.append(gw)
                    url = f"http://127.0.0.1:{port}"
                    wait_ready(f"{url}/readyz", gw)
                    with video.open("rb") as f:
                        file_id = httpx.post(f"{url}/v1/files", files={"file": ("clip.mp4", f)}, timeout=120)
                    body = {
                        "file_id": file_id.json()["id"],
                        "question": "What happens?",
                        "num_frames": 4,
                        "max_tokens": args.tokens,
                    }
                    httpx.post(f"{url}/v1/video/qa", json=body, timeout=600).raise_for_status()  # warm the cache
                    for m in multiples:
                        n = m * args.inflight
                        counts, ok, refused, wall = asyncio.run(burst(url, n, body))
                        other = sum(v for k, v in counts.items() if k not in (200, 503, 429))
                        table.add_row(
                            state,
                            str(wait),
                            f"{n} ({m}x)",
                            str(counts[200]),
                            str(counts[503]),
                            str(counts[429]),
                            str(other),
                            f"{len(ok) / wall:.2f}",
                            f"{pct(ok, 0.5):.2f}",
                            f"{pct(ok, 0.99):.2f}",
                            f"{statistics.median(refused):.3f}" if refused else "-",
                        )
                        console.print(f"{state} waiting={wait} burst={n}: {dict(counts)} in {wall:.1f} s")
                    stop(gw)
            console.print(table)
        finally:
            for proc in reversed(procs):
                stop(proc)


if __name__ == "__main__":
    main()
