"""No decode process outlives the process that owns the pool: normal exit, SIGTERM and SIGKILL."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.utils.procs import descendants, describe, wait_gone
from videoqa.video.testing import make_test_video

# The owner: builds a pool, decodes once (so the forkserver and a worker exist), says so, then waits.
_OWNER = textwrap.dedent(
    """
    import asyncio, sys
    from videoqa.video import DecodePool

    if __name__ == "__main__":
        pool = DecodePool(2)
        asyncio.run(pool.probe(sys.argv[1]))
        print("ready", flush=True)
        sys.stdin.readline()  # the test has seen the helpers; now exit normally (signals arrive earlier)
        pool.close()
    """
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("hygiene") / "clip.mp4", seconds=2, fps=8, gop=8)


@pytest.mark.parametrize("how", ["exit", "sigterm", "sigkill"])
def test_decode_processes_exit_with_their_owner(tmp_path, clip, how) -> None:
    script = tmp_path / "owner.py"
    script.write_text(_OWNER)
    owner = subprocess.Popen(
        [sys.executable, str(script), str(clip)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    helpers: list[psutil.Process] = []
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        helpers = descendants(owner.pid)
        names = " ".join(" ".join(p.cmdline()) for p in helpers)
        assert "forkserver" in names, names  # the pool's forkserver and its worker exist now
        assert any(p.ppid() != owner.pid for p in helpers)  # a worker: the forkserver's child
        if how == "exit":
            owner.communicate("go\n", timeout=30)
        elif how == "sigterm":
            owner.send_signal(signal.SIGTERM)
        elif how == "sigkill":
            owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        left = wait_gone(helpers, timeout=30)
        assert not left, f"still running after the owner's {how}: {describe(left)}"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for p in helpers:  # reparented away from the owner by now: kill them by what was recorded
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
