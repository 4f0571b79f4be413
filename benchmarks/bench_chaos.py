"""Chaos under load: jobs and questions through two gateways while one gateway and then Redis are killed.

    python benchmarks/bench_chaos.py [--rate 4] [--sync 4] [--task qa] [--appendfsync always] [--lease-s 10]

Starts one `videoqa engine` (or uses --engine-url), one redis-server with AOF on (`--appendonly yes`, its data
dir in a temp dir) and two gateways (`videoqa serve --engine-url ...`) on that Redis (one namespace, one shared
data dir, each with VIDEOQA_JOB_WORKERS=1). Then, all at once:

- jobs: --rate submissions per second (POST /v1/jobs, a unique idempotency key each), alternating gateways;
- questions: --sync clients each asking (POST /v1/video/qa) one after another, alternating gateways;
- chaos: after --warmup-s, SIGKILL gateway 1 and start it again (same port); once it is ready, SIGKILL
  redis-server (--redis-signal) and start it again after --redis-down-s (same port, same AOF dir); load goes
  on for --tail-s more.

Then every accepted job (202) is polled through gateway 2 until it has finished, up to --deadline-s. Printed:
submitted, accepted, refused (by status), succeeded, failed (by error code), lost (accepted but missing or
never finished), the question status counts per gateway, and the time from Redis accepting connections again
to the first accepted submission. Exit status 1 when an accepted job is lost or failed other than with a
client error (a 4xx code or a video error), or when a submission or question was refused with a 4xx: everything
sent is valid, so a 4xx during the chaos is the service telling a client something false (it did: 404 for an
existing file while Redis was down).

With `--appendfsync everysec` and SIGKILL, Redis may lose its last second of writes, so a job accepted in that
second can be lost by design; `always` (the default here) or `--redis-signal TERM` lose nothing acknowledged.
Logs (engine, gateways, redis) stay in the printed work dir when the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from bench_load import TOKEN, free_port, start, stop, wait_ready  # sibling script (benchmarks/ is on sys.path)
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from videoqa.video.errors import VideoError
from videoqa.video.testing import make_test_video

console = Console(width=150)
FINAL = ("succeeded", "failed", "cancelled")
# Job error codes that are the request's own fault (a final 4xx): anything else failing an accepted job counts
# against the run. The jobs sent here are all valid, so even these are reported.
CLIENT_CODES = {
    "file_not_found",
    "invalid_request",
    "unknown_parameter",
    "unsupported_parameter",
    "context_length_exceeded",
    "too_many_frames",
    "invalid",
} | {cls.code for cls in (VideoError, *VideoError.__subclasses__())}


@dataclass
class Submission:
    gateway: int
    sent: float
    done: float = 0.0
    status: str = ""  # HTTP status, or "conn_error" / "timeout"
    job_id: str | None = None


def error_code(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0

    def log(self, what: str) -> None:
        console.print(f"[dim]t+{self():6.1f} s[/dim] {what}")


class Redis:
    """A redis-server with AOF in `workdir`, killed and started again on the same port."""

    def __init__(self, workdir: Path, appendfsync: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench_chaos needs redis-server on PATH")
        self.binary, self.workdir, self.appendfsync = binary, workdir, appendfsync
        self.port, self.proc, self.runs = free_port(), None, 0
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.runs += 1
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        log = (self.workdir / f"redis-{self.runs}.log").open("w")
        self.proc = subprocess.Popen([self.binary, *args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # "ready" = answers PING (it has replayed the AOF by then)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    def kill(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)


class Gateway:
    def __init__(self, index: int, env: dict[str, str], work: Path) -> None:
        self.index, self.env, self.work = index, env, work
        self.port, self.runs = free_port(), 0
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.runs += 1
        log = self.work / f"gateway{self.index}-{self.runs}.log"
        self.proc = start(["serve", "--port", str(self.port)], self.env, log)
        wait_ready(f"{self.url}/readyz", self.proc, timeout=300)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


async def submit_jobs(
    client: httpx.AsyncClient, gws: list[Gateway], body: dict, rate: float, stop_at: asyncio.Event, clock: Clock
) -> list[Submission]:
    subs: list[Submission] = []

    async def one(i: int) -> None:
        gw = gws[i % len(gws)]
        sub = Submission(gateway=gw.index, sent=clock())
        subs.append(sub)
        try:
            r = await client.post(f"{gw.url}/v1/jobs", json=body | {"idempotency_key": f"chaos-{i}"}, timeout=30)
            sub.status = str(r.status_code)
            if r.status_code != 202:
                sub.status += f" {error_code(r)}"
            if r.status_code == 202:
                sub.job_id = r.json()["id"]
        except httpx.TimeoutException:
            sub.status = "timeout"
        except httpx.TransportError:
            sub.status = "conn_error"
        sub.done = clock()

    tasks, i = [], 0
    while not stop_at.is_set():
        tasks.append(asyncio.create_task(one(i)))
        i += 1
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    return subs


async def ask_questions(
    client: httpx.AsyncClient, gws: list[Gateway], body: dict, k: int, stop_at: asyncio.Event, counts: Counter
) -> None:
    i = k
    while not stop_at.is_set():
        gw = gws[i % len(gws)]
        i += 1
        try:
            r = await client.post(f"{gw.url}/v1/video/qa", json=body, timeout=120)
            status = str(r.status_code)
            if r.status_code != 200:
                status += f" {error_code(r)}"
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.TransportError:
            status = "conn_error"
            await asyncio.sleep(0.2)  # a dead gateway refuses at once; do not spin
        counts[(gw.index, status)] += 1


async def chaos(args: argparse.Namespace, gws: list[Gateway], redis: Redis, clock: Clock) -> dict[str, float]:
    marks: dict[str, float] = {}
    await asyncio.sleep(args.warmup_s)
    gw1 = gws[0]
    clock.log(f"SIGKILL gateway 1 (pid {gw1.proc.pid if gw1.proc else '?'})")
    gw1.kill()
    marks["gw1_killed"] = clock()
    await asyncio.sleep(1)
    await asyncio.to_thread(gw1.start)
    marks["gw1_back"] = clock()
    clock.log(f"gateway 1 ready again (pid {gw1.proc.pid if gw1.proc else '?'})")
    await asyncio.sleep(args.between_s)
    sig = signal.Signals[f"SIG{args.redis_signal}"]
    redis.kill(sig)
    marks["redis_down"] = clock()
    clock.log(f"{sig.name} redis-server")
    await asyncio.sleep(args.redis_down_s)
    await asyncio.to_thread(redis.start)
    marks["redis_back"] = clock()
    clock.log("redis-server answers PING again (same port, same AOF)")
    await asyncio.sleep(args.tail_s)
    return marks


async def load(args: argparse.Namespace, gws: list[Gateway], redis: Redis, file_id: str) -> tuple:
    clock = Clock()
    job_body = {"task": args.task, "file_id": file_id, "num_frames": 4, "max_tokens": args.tokens}
    if args.task == "qa":
        job_body["question"] = "What happens in the video?"
    qa_body = {"file_id": file_id, "question": "What moves?", "num_frames": 4, "max_tokens": args.tokens}
    stop_at, sync_counts = asyncio.Event(), Counter()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(limits=limits) as client:
        submitter = asyncio.create_task(submit_jobs(client, gws, job_body, args.rate, stop_at, clock))
        askers = [
            asyncio.create_task(ask_questions(client, gws, qa_body, k, stop_at, sync_counts)) for k in range(args.sync)
        ]
        try:
            marks = await chaos(args, gws, redis, clock)
        finally:
            stop_at.set()
            subs = await submitter
            await asyncio.gather(*askers)
    clock.log(f"load stopped: {len(subs)} submissions, {sum(sync_counts.values())} questions")
    return subs, sync_counts, marks, clock


def poll(url: str, job_ids: list[str], deadline_s: float) -> dict[str, dict | None]:
    """Each job's final record through `url` (None: 404); jobs still unfinished at the deadline keep their last."""
    last: dict[str, dict | None] = {}
    pending = set(job_ids)
    deadline = time.monotonic() + deadline_s
    with Progress(console=console, transient=True) as progress, httpx.Client(base_url=url, timeout=10) as client:
        bar = progress.add_task("waiting for the accepted jobs", total=len(job_ids))
        while pending and time.monotonic() < deadline:
            for job_id in sorted(pending):
                try:
                    r = client.get(f"/v1/jobs/{job_id}")
                except httpx.HTTPError:
                    continue
                if r.status_code == 404:
                    last[job_id] = None
                    pending.discard(job_id)
                elif r.status_code == 200:
                    last[job_id] = r.json()
                    if last[job_id]["status"] in FINAL:
                        pending.discard(job_id)
            progress.update(bar, completed=len(job_ids) - len(pending))
            if pending:
                time.sleep(0.5)
    return last


def report(subs: list[Submission], sync_counts: Counter, marks: dict, records: dict, args) -> bool:
    accepted = [s for s in subs if s.status == "202"]
    refused = Counter(s.status for s in subs if s.status != "202")
    succeeded = [j for j in records.values() if j and j["status"] == "succeeded"]
    failed = [j for j in records.values() if j and j["status"] == "failed"]
    fail_codes = Counter((j.get("error") or {}).get("code") or (j.get("error") or {}).get("message") for j in failed)
    lost = [i for i, j in records.items() if j is None or j["status"] not in FINAL]
    lost += [s.job_id for s in accepted if s.job_id not in records]
    cancelled = [j for j in records.values() if j and j["status"] == "cancelled"]
    attempts = Counter(j["attempts"] for j in succeeded)
    after = [s for s in accepted if s.sent >= marks["redis_back"]]
    first = min((s.done for s in after), default=None)

    table = Table(
        title=f"Chaos under load: {args.rate:g} {args.task} jobs/s + {args.sync} question clients, 2 gateways, "
        f"Redis AOF appendfsync {args.appendfsync}, SIG{args.redis_signal} Redis for {args.redis_down_s:g} s, "
        f"job lease {args.lease_s:g} s"
    )
    table.add_column("what")
    table.add_column("count / value", justify="right")
    table.add_row("jobs submitted", str(len(subs)))
    table.add_row("accepted (202)", str(len(accepted)))
    table.add_row("refused", ", ".join(f"{k}: {v}" for k, v in sorted(refused.items())) or "0")
    table.add_row("succeeded", f"{len(succeeded)} (attempts: {dict(sorted(attempts.items()))})")
    table.add_row("failed", ", ".join(f"{k}: {v}" for k, v in fail_codes.items()) or "0")
    table.add_row("cancelled", str(len(cancelled)))
    table.add_row("lost (missing or unfinished)", str(len(lost)))
    for gw in (1, 2):
        row = {k[1]: v for k, v in sorted(sync_counts.items()) if k[0] == gw}
        table.add_row(f"questions via gateway {gw}", ", ".join(f"{k}: {v}" for k, v in row.items()))
    table.add_row(
        "first accepted submission after Redis was back",
        f"{first - marks['redis_back']:.2f} s" if first is not None else "none",
    )
    table.add_row(
        "timeline (s)",
        f"gw1 killed {marks['gw1_killed']:.1f}, gw1 ready {marks['gw1_back']:.1f}, "
        f"Redis killed {marks['redis_down']:.1f}, Redis back {marks['redis_back']:.1f}",
    )
    console.print(table)
    if lost:
        console.print(f"[red]lost jobs:[/red] {lost[:10]}")
    bad = [j for j in failed if (j.get("error") or {}).get("code") not in CLIENT_CODES]
    if bad:
        shown = [(j["id"], j["error"]) for j in bad[:10]]
        console.print(f"[red]jobs failed other than with a client error:[/red] {shown}")
    false_4xx = {k: v for k, v in refused.items() if k.startswith("4")}
    false_4xx |= {f"question {k[1]}": v for k, v in sync_counts.items() if k[1].startswith("4")}
    if false_4xx:
        console.print(f"[red]valid requests refused with a 4xx:[/red] {false_4xx}")
    return not lost and not bad and not false_4xx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine-url", help="use this engine instead of starting one")
    ap.add_argument("--task", choices=("qa", "caption"), default="qa")
    ap.add_argument("--rate", type=float, default=4.0, help="job submissions per second")
    ap.add_argument("--sync", type=int, default=4, help="concurrent synchronous question clients")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--lease-s", type=float, default=10.0, help="VIDEOQA_JOB_LEASE_S of both gateways")
    ap.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    ap.add_argument("--redis-signal", choices=("KILL", "TERM"), default="KILL")
    ap.add_argument("--warmup-s", type=float, default=5.0)
    ap.add_argument("--between-s", type=float, default=3.0, help="from gateway 1 back to killing Redis")
    ap.add_argument("--redis-down-s", type=float, default=3.0)
    ap.add_argument("--tail-s", type=float, default=8.0, help="load after Redis is back")
    ap.add_argument("--deadline-s", type=float, default=300.0, help="for the accepted jobs to finish")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    procs: list[subprocess.Popen] = []
    redis: Redis | None = None
    gws: list[Gateway] = []
    ok = False
    try:
        engine_url = args.engine_url
        if engine_url is None:
            port = free_port()
            procs.append(start(["engine", "--port", str(port)], {}, work / "engine.log"))
            engine_url = f"http://127.0.0.1:{port}"
            console.print("starting the engine ...")
            wait_ready(f"{engine_url}/internal/health", procs[0])
        redis = Redis(work, args.appendfsync)
        redis.start()
        env = {
            "VIDEOQA_ENGINE_URL": engine_url,
            "VIDEOQA_ENGINE_API_TOKEN": TOKEN,
            "VIDEOQA_REDIS_URL": redis.url,
            "VIDEOQA_REDIS_NAMESPACE": "chaos",
            "VIDEOQA_DATA_DIR": str(work / "data"),  # gateways on one Redis share the video store
            "VIDEOQA_JOB_WORKERS": "1",
            "VIDEOQA_JOB_LEASE_S": str(args.lease_s),
            "VIDEOQA_MAX_INFLIGHT": "4",
            "VIDEOQA_MAX_WAITING": "40",
        }
        gws = [Gateway(1, env, work), Gateway(2, env, work)]
        for gw in gws:
            gw.start()
        video = make_test_video(work / "clip.mp4", seconds=4, fps=12, gop=12)
        with video.open("rb") as f:  # uploaded through gateway 1, the one that is killed
            file_id = httpx.post(f"{gws[0].url}/v1/files", files={"file": ("clip.mp4", f)}, timeout=120).json()["id"]
        for gw in gws:  # warm: decoder, frame cache, both gateways' paths to the engine
            body = {"file_id": file_id, "question": "What moves?", "num_frames": 4, "max_tokens": args.tokens}
            httpx.post(f"{gw.url}/v1/video/qa", json=body, timeout=600).raise_for_status()
        console.print(f"engine {engine_url}, redis {redis.url} (AOF in {work}), gateways {[g.url for g in gws]}")
        subs, sync_counts, marks, clock = asyncio.run(load(args, gws, redis, file_id))
        job_ids = [s.job_id for s in subs if s.job_id]
        records = poll(gws[1].url, job_ids, args.deadline_s)
        clock.log(f"polled {len(job_ids)} accepted jobs")
        ok = report(subs, sync_counts, marks, records, args)
    finally:
        for gw in gws:
            if gw.proc is not None:
                stop(gw.proc)
        if redis is not None and redis.proc is not None:
            stop(redis.proc)
        for proc in procs:
            stop(proc)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            console.print(f"logs kept in {work}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
