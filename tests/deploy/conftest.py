"""The deploy tier: build the CPU images, start docker/compose.yaml's stack (podman or docker) and check it from
outside. One stack for the package (torn down when the deploy tests are done, so its engine container does not
compete with the rest of the suite for CPU); tests that stop or kill containers bring them back before they return."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.utils.procs import run_reaping

ROOT = Path(__file__).resolve().parents[2]


def _containers_env() -> tuple[str, dict[str, str]]:
    """The engine (docker or podman) and environment scripts/containers.sh chooses, so tests drive the same one."""
    out = subprocess.run(
        ["bash", "-c", 'source scripts/containers.sh && echo "$CTR" && echo "${CONTAINERS_CONF:-}"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    env = dict(os.environ)
    if out[1]:
        env["CONTAINERS_CONF"] = out[1]
    return out[0], env


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll `condition` until it holds, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(interval)


def status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


@dataclass
class Stack:
    ctr: str
    env: dict[str, str]
    gateways: tuple[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`podman ARGS...` (or docker)."""
        return run_reaping([self.ctr, *args], env=self.env, capture=True, check=check, timeout=timeout)

    def state(self, container: str) -> str:
        return self.run("inspect", "--format", "{{.State.Status}}", container).stdout.strip()

    def started_at(self, container: str) -> str:
        return self.run("inspect", "--format", "{{.State.StartedAt}}", container).stdout.strip()

    def logs(self, container: str) -> str:
        run = self.run("logs", container)
        return run.stdout + run.stderr

    def ensure_running(self, container: str) -> None:
        if self.state(container) != "running":
            self.run("start", container)

    def wait_ready(self, timeout: float = 900) -> None:
        for url in self.gateways:
            wait_for(lambda url=url: status(f"{url}/readyz") == 200, timeout, f"{url}/readyz did not answer 200")


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    ctr, env = _containers_env()
    # A short job lease so a killed gateway's job is taken over quickly (compose passes it to the gateways).
    env["VIDEOQA_JOB_LEASE_S"] = "6"
    gateways = (
        f"http://127.0.0.1:{env.get('VIDEOQA_GATEWAY1_PORT', '8001')}",
        f"http://127.0.0.1:{env.get('VIDEOQA_GATEWAY2_PORT', '8002')}",
    )
    if os.environ.get("VIDEOQA_DEPLOY_BUILD", "1") != "0":  # 0: test the images already built (iterating)
        run_reaping(["scripts/images.sh"], cwd=ROOT, env=env, timeout=3600)
    run_reaping(["scripts/stack.sh", "down"], cwd=ROOT, env={**env, "VOLUMES": "1"}, timeout=600)
    try:
        run_reaping(["scripts/stack.sh", "up"], cwd=ROOT, env=env, timeout=1200)
        yield Stack(ctr, env, gateways)
    finally:
        for name in ("videoqa-engine", "videoqa-gateway-1", "videoqa-gateway-2"):
            logs = run_reaping([ctr, "logs", "--tail", "30", name], env=env, capture=True, check=False, timeout=60)
            print(f"--- {name}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        run_reaping(["scripts/stack.sh", "down"], cwd=ROOT, env={**env, "VOLUMES": "1"}, timeout=600)
