"""No process of ours survives its parent: a gateway's decode forkserver and workers after SIGTERM or SIGKILL,
and `videoqa engine`'s vLLM engine core after SIGKILL (the embedded gateway's SIGTERM: test_lifecycle.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.utils.net import free_port, wait_http
from tests.utils.procs import descendants, describe, stop_process, wait_gone
from tests.utils.servers import videoqa_env


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_gateway_helpers_exit_with_the_gateway(start_gateway, videos, sig) -> None:
    gw = start_gateway()
    with open(videos["short"], "rb") as f:  # probing the upload starts the decode forkserver and a worker
        assert httpx.post(f"{gw.url}/v1/files", files={"file": ("v.mp4", f)}, timeout=60).status_code == 200
    helpers = descendants(gw.proc.pid)
    assert any("forkserver" in " ".join(p.cmdline()) for p in helpers), describe(helpers)
    gw.proc.send_signal(sig)
    gw.proc.wait(60)
    left = wait_gone(helpers, timeout=60)
    assert not left, f"left running after the gateway's {sig.name}: {describe(left)}"


@pytest.mark.engine  # starts its own engine
def test_engine_core_exits_when_the_engine_process_is_killed(tiny_checkpoint: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoqa.cli", "engine", "--model", str(tiny_checkpoint), "--port", str(port)],
        env=videoqa_env(dtype="float32", max_model_len="4096"),
        stdout=(tmp_path / "engine.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    helpers: list[psutil.Process] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/internal/health", 600, proc)
        helpers = descendants(proc.pid)
        assert any("EngineCore" in " ".join(p.cmdline()) + p.name() for p in helpers), describe(helpers)
        proc.send_signal(signal.SIGKILL)  # no cleanup runs in the parent: the children must notice themselves
        proc.wait(10)
        left = wait_gone(helpers, timeout=120)
        assert not left, f"left running after `videoqa engine` was SIGKILLed: {describe(left)}"
    finally:
        stop_process(proc, grace=10)
        for p in helpers:
            if p.is_running():
                p.kill()
