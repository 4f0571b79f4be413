"""Processes the tests start: stopping them, a process's descendants, and waiting (with a deadline) for them to go."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    """Live (non-zombie) descendants of `pid`."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in kids if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of `procs` runs any more (or the deadline passes); return those still running.

    psutil.Process remembers each process's creation time, so a reused pid does not count as alive.
    """
    deadline = time.monotonic() + timeout
    left = [p for p in procs if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if _alive(p)]
    return left


def describe(procs: list[psutil.Process]) -> str:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} (ppid {p.ppid()}): {' '.join(p.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            continue
    return "; ".join(out)


def stop_process(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# Container runtimes' daemons (podman's conmon, its DNS server, ...) double-fork, so a test session that is a child
# subreaper (tests/conftest.py) adopts them, and when they exit it must reap them: `podman stop` waits until the
# container's conmon is gone, and a zombie conmon never is, so an unreaped one hangs it for ever. Only these are
# reaped: a zombie of a process the tests started themselves is left to its subprocess.Popen to wait on.
ADOPTED_DAEMONS = frozenset({"conmon", "aardvark-dns", "netavark", "catatonit", "slirp4netns", "pasta"})


def reap_adopted_daemons() -> int:
    """One pass: reap this process's zombie children that are container-runtime daemons; return how many."""
    reaped = 0
    with contextlib.suppress(Exception):  # a /proc race must never escape into a test or its teardown
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
                if child.status() == psutil.STATUS_ZOMBIE and child.name() in ADOPTED_DAEMONS:
                    os.waitpid(child.pid, os.WNOHANG)
                    reaped += 1
    return reaped


def run_reaping(
    args: list[str], *, timeout: float, check: bool = True, capture: bool = False, **popen: object
) -> subprocess.CompletedProcess[str]:
    """subprocess.run for container-engine commands: while it runs, the calling thread reaps adopted daemons.

    A background reaper thread alone is not enough: in long sessions it was seen gone from the kernel (the OS
    thread vanished while Python still listed it), and `podman stop` then spun for ever on a zombie conmon.
    """
    stdio = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} if capture else {}
    # Its own process group, so a timeout kills the whole command (a hung `podman stop` spins at 100% CPU).
    with subprocess.Popen(args, text=True, start_new_session=True, **stdio, **popen) as proc:  # type: ignore[call-overload]
        deadline = time.monotonic() + timeout
        out, err = "", ""
        while True:
            reap_adopted_daemons()
            try:
                out, err = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.communicate()
                    raise subprocess.TimeoutExpired(args, timeout) from None
    result = subprocess.CompletedProcess(args, proc.returncode, out or "", err or "")
    if check:
        result.check_returncode()
    return result
