"""Session-wide fixtures shared by every package's tests: tiny checkpoints built with the project's own code."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.utils.net import free_port, wait_http
from tests.utils.procs import stop_process
from tests.utils.servers import ENGINE_TOKEN, videoqa_env

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def make_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: make_tiny_checkpoint(layout=None, seed=0) -> checkpoint dir, built once per (layout, seed)."""
    from videoqa.model.layout import VideoLayout
    from videoqa.model.tiny import init_tiny

    built: dict[tuple, Path] = {}

    def make(layout: VideoLayout | None = None, seed: int = 0) -> Path:
        layout = layout or VideoLayout()
        key = (layout, seed)
        if key not in built:
            name = (
                f"tiny-{layout.pool_mode}-{layout.newline}-s{layout.slowfast_stride}-ft{int(layout.frame_token)}-{seed}"
            )
            built[key] = init_tiny(tmp_path_factory.mktemp(name), seed=seed, layout=layout)
        return built[key]

    return make


# ---- tiers by fixture ------------------------------------------------------------------------------------------
# pytest reads `pytestmark` only from test modules, never from a conftest, so a conftest cannot mark the tests that
# use its fixtures that way. The tier follows from the fixtures a test uses instead (directly or through other
# fixtures: item.fixturenames is the whole closure), so a test that needs the session engine can never land in the
# fast tier. Tests that start an engine themselves are marked `engine` in their module.
TIER_FIXTURES = {"engine_url": "engine", "start_gateway": "engine", "demo_gateway": "engine", "redis_server": "redis"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker (the mark plugin's own modifyitems hook)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in TIER_FIXTURES.items():
            if fixture in used:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def tiny_checkpoint(make_tiny_checkpoint: Callable[..., Path]) -> Path:
    """A random tiny checkpoint with the default LLaVA-Video layout (average, grid, s=1)."""
    return make_tiny_checkpoint()


# ---- no stray processes -------------------------------------------------------------------------------------
# This process becomes a "child subreaper" (prctl PR_SET_CHILD_SUBREAPER), so a process orphaned by anything a
# test started (a killed gateway's decode workers, an engine's core) is re-parented here instead of to init and
# the check at the end of the session sees it.
_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    import ctypes
    import ctypes.util
    import sys

    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _expected_helpers() -> set[int]:
    """multiprocessing's own helpers of this process: they exit with it (EOF on pipes only it holds)."""
    from multiprocessing import forkserver, resource_tracker

    pids = {
        getattr(forkserver._forkserver, "_forkserver_pid", None),
        getattr(resource_tracker._resource_tracker, "_pid", None),
    }
    return {p for p in pids if p}


# Container runtimes' daemons that this session adopts as a subreaper are reaped as they exit (see
# tests/utils/procs.py: a zombie conmon hangs `podman stop`); the deploy tier also reaps in its own commands.
def _reap_adopted_daemons(stop: threading.Event, watch_engines: bool) -> None:
    import psutil

    from tests.utils.procs import reap_adopted_daemons

    me = psutil.Process()
    while not stop.wait(0.2):
        # Nothing may end this loop but `stop`: a reaper that died on one odd /proc read would leave the next
        # zombie conmon unreaped and the teardown hung.
        reap_adopted_daemons()
        with contextlib.suppress(Exception):
            if watch_engines:
                for proc in me.children(recursive=True):
                    with contextlib.suppress(psutil.Error, OSError):
                        if proc.pid not in _engines_seen and _is_engine(proc.cmdline()):
                            _engines_seen[proc.pid] = " ".join(proc.cmdline())[:200]


# ---- the fast tier starts no engine ---------------------------------------------------------------------------
# A run that deselects `engine` (make test-fast) watches every process the tests start and fails the session if one
# is a vLLM engine: the tier markers above are what keeps it fast, and a test that starts an engine without using
# the engine fixtures (and without its own `engine` mark) would otherwise slip in unnoticed.
_engines_seen: dict[int, str] = {}


def _is_engine(cmdline: list[str]) -> bool:
    """`videoqa engine`, or vLLM's engine core (its process title, which any embedded LocalEngine starts)."""
    joined = " ".join(cmdline)
    return "EngineCore" in joined or ("videoqa.cli" in cmdline and "engine" in cmdline)


def _engines_deselected(config: pytest.Config) -> bool:
    from _pytest.mark.expression import Expression

    markexpr = config.getoption("markexpr", "") or ""
    # The expression as pytest evaluates it, for a test marked only `engine`.
    return bool(markexpr) and not Expression.compile(markexpr).evaluate(lambda name, **_: name == "engine")


_reaper_stop = threading.Event()


def pytest_sessionstart(session: pytest.Session) -> None:
    _become_subreaper()
    watch = _engines_deselected(session.config)
    threading.Thread(target=_reap_adopted_daemons, args=(_reaper_stop, watch), name="reaper", daemon=True).start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if any process started by the tests (or orphaned by one) is still running after every
    fixture has been torn down. Runs after session-scoped teardown (servers, engines, gateways)."""
    import psutil

    from tests.utils.procs import describe, wait_gone

    me = psutil.Process()
    expected = _expected_helpers()
    candidates = [p for p in me.children(recursive=True) if p.pid not in expected]
    left = wait_gone(candidates, timeout=60)  # some are still on their way out (SIGTERM grace periods)
    for child in me.children():
        if child.status() == psutil.STATUS_ZOMBIE:  # re-parented orphans that have exited: reap them
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, os.WNOHANG)
    _reaper_stop.set()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if _engines_seen:
        message = (
            "engines started in a run that deselects `engine` (mark the test `engine`, or use the engine fixtures): "
            + "; ".join(_engines_seen.values())
        )
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not left:
        return
    message = f"processes left running after the test session (now killed): {describe(left)}"
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(message, red=True)
    for proc in left:  # ours: started by the tests, or orphaned by what they started
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---- the session engine and per-module gateways (service and training tests) ------------------------------------
# One `videoqa engine` (split mode) for the whole session; gateways (`videoqa serve --engine-url ...`) started per
# test module with the settings they need.


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


def launch_gateway(workdir: Path, **settings: str) -> Gateway:
    """`videoqa serve` on a free port with these settings (env vars), logging to workdir; returns once ready."""
    port = free_port()
    settings = {"data_dir": str(workdir / "data"), "decode_workers": "1", **settings}
    log = workdir / "gateway.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoqa.cli", "serve", "--port", str(port)],
        env=videoqa_env(**settings),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    gw = Gateway(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_http(f"{gw.url}/readyz", 300, proc)
    except Exception:
        gw.stop()
        raise RuntimeError(f"gateway failed to start:\n{log.read_text()[-3000:]}") from None
    return gw


# Module scope: a module's gateways (each with its decode workers) stop when the module is done, instead of ~20 of
# them idling beside the rest of the session.
@pytest.fixture(scope="module")
def start_gateway(engine_url: str, tiny_checkpoint: Path, tmp_path_factory) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(**settings: str) -> Gateway:
        settings = {
            "engine_url": engine_url,
            "engine_api_token": ENGINE_TOKEN,
            "model": str(tiny_checkpoint),
            **settings,
        }
        gw = launch_gateway(tmp_path_factory.mktemp("gateway"), **settings)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`make serve`'s embedded default: no model configured, so the shipped demo checkpoint on an in-process engine.
    One for the session: the tests that only ask it questions share its engine start."""
    gw = launch_gateway(tmp_path_factory.mktemp("demo-gateway"), engine_url="", model="")
    yield gw
    gw.stop()
