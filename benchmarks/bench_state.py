"""Throughput of the shared-state operations the gateway does per request, on both backends.

Starts its own redis-server on a free loopback port (needs /usr/bin/redis-server: scripts/ensure-redis.sh) unless
--redis-url is given. Prints one row per operation: sequential latency and throughput with 16 concurrent callers.
Usage: .venv/bin/python benchmarks/bench_state.py [--n 2000] [--redis-url redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.progress import track
from rich.table import Table

from videoqa.service.state import State, create_state


def _start_redis(workdir: str) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; run scripts/ensure-redis.sh or pass --redis-url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start within 10 s")


async def _measure(op: Callable[[int], Awaitable[object]], n: int, concurrency: int) -> tuple[float, float]:
    """(mean sequential latency in ms, ops/s with `concurrency` callers)."""
    t0 = time.perf_counter()
    for i in range(n):
        await op(i)
    seq_ms = (time.perf_counter() - t0) / n * 1000

    async def caller(start: int) -> None:
        for i in range(start, n, concurrency):
            await op(n + i)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    return seq_ms, n / (time.perf_counter() - t0)


async def _bench(state: State, n: int) -> list[tuple[str, float, float]]:
    frames = b"\0" * (256 * 1024)  # a typical packed frame-cache entry is hundreds of KiB

    async def job_cycle(i: int) -> None:
        await state.job_submit(f"j{i}", {"i": i})
        job = await state.job_claim("w", 30)
        if job is not None:
            await state.job_complete(job.id, "w", {"ok": True})

    await state.cache_set("hot", frames, 3600)
    ops: dict[str, Callable[[int], Awaitable[object]]] = {
        "cache_get (256 KiB hit)": lambda i: state.cache_get("hot"),
        "cache_set (256 KiB)": lambda i: state.cache_set(f"k{i % 64}", frames, 3600),
        "rate_hit": lambda i: state.rate_hit(f"user{i % 8}", 10**9, 60),
        "file_get": lambda i: state.file_get("missing"),
        "job submit+claim+complete": job_cycle,
    }
    rows = []
    for name in track(list(ops), description=f"{state.backend}"):
        seq_ms, tput = await _measure(ops[name], n, concurrency=16)
        rows.append((name, seq_ms, tput))
    return rows


async def main(n: int, redis_url: str) -> None:
    table = Table(title=f"shared state: {n} ops each, 16 concurrent callers for throughput")
    for col in ("backend", "operation", "latency ms (sequential)", "ops/s (16 callers)"):
        table.add_column(col, justify="right" if "ms" in col or "ops" in col else "left")
    for url in (None, redis_url):
        state = create_state(url, namespace=f"bench{uuid.uuid4().hex[:6]}")
        try:
            for name, seq_ms, tput in await _bench(state, n):
                table.add_row(state.backend, name, f"{seq_ms:.3f}", f"{tput:,.0f}")
        finally:
            await state.close()
    Console(width=120).print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="operations per row")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    args, _ = parser.parse_known_args()  # run_all.py passes its own arguments to every script
    if args.n < 16:
        raise SystemExit(f"--n must be >= 16, got {args.n}")
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.redis_url
        if url is None:
            proc, url = _start_redis(tmp)
        try:
            asyncio.run(main(args.n, url))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
