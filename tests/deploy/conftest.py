"""The deploy tier: build the CPU images, start docker/compose.yaml's stack (podman or docker) and check it from
outside. One stack for the package (torn down when the deploy tests are done, so its engine container does not
compete with the rest of the suite for CPU); tests that stop or kill containers bring them back before they return."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.utils.procs import reap_adopted_daemons, run_reaping

ROOT = Path(__file__).resolve().parents[2]


# ---- the images build while the rest of the suite runs -----------------------------------------------------------
# A cold build (base image, then the gateway and engine-cpu images: several GB of wheels unpacked and committed as
# layers) is minutes of mostly disk and one core. It starts in the background as soon as collection selects a
# deploy test, and the deploy tests run last, so it overlaps the other tiers instead of adding to the run.
_build: subprocess.Popen[bytes] | None = None
_build_log = Path(os.environ.get("TMPDIR", "/tmp")) / f"videoqa-images-{os.getpid()}.log"


@pytest.hookimpl(trylast=True)  # after `-m` has deselected: the order of what runs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("deploy") is not None)  # stable: deploy last


def pytest_collection_finish(session: pytest.Session) -> None:
    global _build
    wanted = any(item.get_closest_marker("deploy") for item in session.items)
    if wanted and os.environ.get("VIDEOQA_DEPLOY_BUILD", "1") != "0" and not session.config.option.collectonly:
        _, env = _containers_env()
        with _build_log.open("wb") as log:
            # Its own process group, so an aborted session kills the whole build (pytest_sessionfinish).
            _build = subprocess.Popen(
                ["scripts/images.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )


@pytest.hookimpl(tryfirst=True)  # before the root conftest's check for processes the tests left running
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _build is not None and _build.poll() is None:  # the session ended before the deploy tests needed it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(_build.pid, signal.SIGKILL)
        _build.wait()


def wait_for_images(timeout: float = 3600) -> None:
    """Block until the background build is done (reaping container daemons meanwhile); raise with its log if it
    failed. A no-op when no build was started (VIDEOQA_DEPLOY_BUILD=0: test the images already built)."""
    if _build is None:
        return
    deadline = time.monotonic() + timeout
    while _build.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(_build.pid, signal.SIGKILL)
            _build.wait()
            raise TimeoutError(f"scripts/images.sh ran over {timeout:.0f} s; its log: {_build_log}")
        reap_adopted_daemons()
        time.sleep(0.5)
    if _build.returncode != 0:
        tail = _build_log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"scripts/images.sh failed (exit {_build.returncode}); {_build_log} ends:\n{tail}")


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
    wait_for_images()  # started when collection selected the deploy tests (above)
    run_reaping(["scripts/stack.sh", "down"], cwd=ROOT, env={**env, "VOLUMES": "1"}, timeout=600)
    try:
        run_reaping(["scripts/stack.sh", "up"], cwd=ROOT, env=env, timeout=1200)
        yield Stack(ctr, env, gateways)
    finally:
        for name in ("videoqa-engine", "videoqa-gateway-1", "videoqa-gateway-2"):
            logs = run_reaping([ctr, "logs", "--tail", "30", name], env=env, capture=True, check=False, timeout=60)
            print(f"--- {name}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        run_reaping(["scripts/stack.sh", "down"], cwd=ROOT, env={**env, "VOLUMES": "1"}, timeout=600)
