"""Process hygiene: no helper process of ours outlives the process that owns it.

A SIGKILLed gateway or CLI runs no cleanup, so its helpers must notice the death themselves:

- `watch_pid(pid)`: a daemon thread blocks on a pidfd of the owner (readable once it has exited; Linux >= 5.3,
  polling `os.kill(pid, 0)` elsewhere) and then terminates this process: SIGTERM (vLLM's engine core shuts down
  cleanly on it), SIGKILL after a grace period.
- `set_parent_death_signal(sig)`: Linux prctl(PR_SET_PDEATHSIG) through ctypes: the kernel sends `sig` when the
  *thread* that forked this process exits (prctl(2)), so it is only used where that parent is single-threaded
  (the multiprocessing forkserver forking decode workers).
- `exit_with_parent_on_fork()`: every later os.fork() child of this process (vLLM forks its engine core from a
  worker thread, which rules out PR_SET_PDEATHSIG) watches its parent's pid.

Why it is needed: decode workers are forked by the multiprocessing forkserver and block reading their task
queue, whose write end they hold themselves, so they never see EOF when the gateway dies; they also hold the
forkserver's "alive" pipe, so the forkserver (and multiprocessing's resource tracker) stayed up too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_watched: set[int] = set()
_watch_lock = threading.Lock()
_fork_hook_installed = False
_fork_parent = 0


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent thread exits; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except OSError:
        return False
    return True


def _terminate_self(grace_s: float) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)  # still here: the SIGTERM handler did not finish in time
    os.kill(os.getpid(), signal.SIGKILL)


def _poll_until_gone(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass  # exists, owned by someone else (cannot be ours after a pid reuse, but keep waiting)
        time.sleep(1.0)


def watch_pid(pid: int, grace_s: float = 10.0) -> None:
    """Terminate this process once `pid` has exited (idempotent per pid).

    The pidfd is opened now, so a pid reused after the owner's death cannot be mistaken for the owner later.
    """
    with _watch_lock:
        if pid in _watched or pid == os.getpid():
            return
        _watched.add(pid)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # the owner is already gone
        fd = -1
    except (AttributeError, OSError):
        fd = None

    def run() -> None:
        if fd is None:  # no pidfd (kernel < 5.3, not Linux)
            _poll_until_gone(pid)
        elif fd >= 0:
            select.select([fd], [], [])  # a pidfd turns readable when the process exits
            os.close(fd)
        log.warning("owner process %d exited; process %d exits too", pid, os.getpid())
        _terminate_self(grace_s)

    threading.Thread(target=run, name=f"watch-owner-{pid}", daemon=True).start()


def _before_fork() -> None:
    global _fork_parent
    _fork_parent = os.getpid()


def _after_fork_in_child() -> None:
    global _watch_lock
    _watch_lock = threading.Lock()  # another thread may have held it at fork time
    _watched.clear()  # the parent's watcher threads do not exist in this child
    # The pid recorded before the fork, not os.getppid(): a parent that dies before this hook runs would make
    # getppid() name init or a subreaper instead.
    watch_pid(_fork_parent)


def exit_with_parent_on_fork() -> None:
    """From now on, every os.fork() child of this process exits when its parent does (once per process)."""
    global _fork_hook_installed
    if not _fork_hook_installed:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _fork_hook_installed = True
