"""videoqa.proc: a child forked from a worker thread (as vLLM forks its engine core) exits with its parent."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from tests.utils.procs import describe, wait_gone

_OWNER = textwrap.dedent(
    """
    import multiprocessing as mp, sys, threading, time
    from videoqa.proc import exit_with_parent_on_fork

    def child():
        time.sleep(600)

    if __name__ == "__main__":
        if sys.argv[1] == "hook":
            exit_with_parent_on_fork()
        procs = []
        def start():  # fork from a thread that then ends: PR_SET_PDEATHSIG would fire too early or never
            p = mp.get_context("fork").Process(target=child, daemon=False)
            p.start()
            procs.append(p)
        t = threading.Thread(target=start)
        t.start(); t.join()
        print(procs[0].pid, flush=True)
        time.sleep(600)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_forked_child_exits_with_its_parent(tmp_path, sig) -> None:
    script = tmp_path / "owner.py"
    script.write_text(_OWNER)
    owner = subprocess.Popen([sys.executable, str(script), "hook"], stdout=subprocess.PIPE, text=True)
    child: psutil.Process | None = None
    try:
        assert owner.stdout is not None
        child = psutil.Process(int(owner.stdout.readline()))
        assert child.ppid() == owner.pid
        owner.send_signal(sig)
        owner.wait(30)
        left = wait_gone([child], timeout=30)
        assert not left, f"forked child outlived its parent's {sig.name}: {describe(left)}"
    finally:
        if owner.poll() is None:
            owner.kill()
        if child is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
