"""Real processes: a redis-server, one `videoqa engine` (split mode) for the session, and gateways
(`videoqa serve --engine-url ...`) started per test module with the settings they need."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from videoqa.video.testing import make_test_video

pytestmark = pytest.mark.engine

ENGINE_TOKEN = "test-engine-token"
"""The session engine's VIDEOQA_ENGINE_API_TOKEN; gateways started here send it."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {url}")
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer {status} within {timeout} s")


def stop_process(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class RedisServer:
    """A real redis-server on a fixed free port that tests can stop and start again."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run `make setup` (scripts/ensure-redis.sh)")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOQA_")}
    env.update({"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env.update({f"VIDEOQA_{k.upper()}": v for k, v in settings.items()})
    return env


@pytest.fixture(scope="session")
def engine_url(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("engine") / "engine.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoqa.cli", "engine", "--model", str(tiny_checkpoint), "--port", str(port)],
        env=_env(dtype="float32", max_model_len="4096", engine_api_token=ENGINE_TOKEN),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/internal/health", 900, proc)  # generous: CI machines may be shared
        yield url
    finally:
        stop_process(proc)


class Gateway:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="session")
def start_gateway(engine_url: str, tiny_checkpoint: Path, tmp_path_factory) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(**settings: str) -> Gateway:
        port = free_port()
        workdir = tmp_path_factory.mktemp("gateway")
        settings = {
            "engine_url": engine_url,
            "engine_api_token": ENGINE_TOKEN,
            "model": str(tiny_checkpoint),
            "data_dir": str(workdir / "data"),
            "decode_workers": "1",
            **settings,
        }
        log = workdir / "gateway.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "videoqa.cli", "serve", "--port", str(port)],
            env=_env(**settings),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        gw = Gateway(proc, f"http://127.0.0.1:{port}", log)
        started.append(gw)
        try:
            wait_http(f"{gw.url}/readyz", 300, proc)
        except Exception:
            raise RuntimeError(f"gateway failed to start:\n{log.read_text()[-3000:]}") from None
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "short": make_test_video(d / "short.mp4", seconds=4, fps=12, gop=12),
        "other": make_test_video(d / "other.mp4", seconds=6, fps=10, gop=20, size=(128, 96)),
        "long": make_test_video(d / "long.mp4", seconds=30, fps=8, gop=40),
    }
