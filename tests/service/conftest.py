"""Real processes: a redis-server, one `videoqa engine` (split mode) for the session, and gateways
(`videoqa serve --engine-url ...`) started per test module with the settings they need.

Fixtures only: helpers live in tests/utils/. A test that uses `engine_url` or `start_gateway` (directly or through
another fixture) is marked `engine` by tests/conftest.py, so the fast tier deselects it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.utils.net import free_port, wait_http
from tests.utils.procs import stop_process
from tests.utils.redis_server import RedisServer
from tests.utils.servers import ENGINE_TOKEN, videoqa_env
from videoqa.video.testing import make_test_video


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def engine_url(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("engine") / "engine.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoqa.cli", "engine", "--model", str(tiny_checkpoint), "--port", str(port)],
        env=videoqa_env(dtype="float32", max_model_len="4096", engine_api_token=ENGINE_TOKEN),
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


# Module scope: a module's gateways (each with its decode workers) stop when the module is done, instead of ~20 of
# them idling beside the rest of the session.
@pytest.fixture(scope="module")
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
            env=videoqa_env(**settings),
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
