"""A pool of decode worker processes: a hostile file can hang, crash or bloat a worker, never the server.

Each task has a wall-clock timeout; a worker that overruns it is killed and the pool rebuilt, a worker that
dies (segfault, RLIMIT_AS) surfaces as DecoderCrashedError and the pool is rebuilt, and the event loop only
ever awaits futures.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import resource
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from videoqa.proc import set_parent_death_signal, watch_pid
from videoqa.video.animated import CONTAINER as ANIMATED_WEBP
from videoqa.video.animated import image_as_video
from videoqa.video.errors import DecoderCrashedError, DecodeTimeoutError, VideoTooLargeError
from videoqa.video.sampler import merge, plan_runs, probe, sample_frames, sample_part, sampled_video
from videoqa.video.types import DecodeLimits, SampledVideo, SamplingSpec, VideoInfo

log = logging.getLogger(__name__)


def _init_worker(max_memory_bytes: int, owner_pid: int) -> None:
    # The worker's parent is the forkserver, not the pool's owner, and it blocks on a queue it holds both ends
    # of: without these it outlives a SIGKILLed or SIGTERMed owner (and keeps the forkserver alive with it).
    watch_pid(owner_pid, grace_s=2.0)
    set_parent_death_signal(signal.SIGKILL)  # the forkserver is single-threaded, so "parent thread" is safe here
    # Cap the worker's address space so a decompression bomb fails inside it with MemoryError.
    if max_memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    os.environ.setdefault("OMP_NUM_THREADS", "1")


class DecodePool:
    """Async (and sync) probe/sample in worker processes with limits and timeouts."""

    def __init__(self, workers: int = 2, limits: DecodeLimits | None = None) -> None:
        self.workers = max(workers, 1)
        self.limits = limits or DecodeLimits()
        self._lock = threading.Lock()
        self._executor = self._new_executor()
        self.restarts = 0

    def _new_executor(self) -> ProcessPoolExecutor:
        # forkserver: workers never inherit a threaded server's state (vLLM, uvicorn) through fork.
        ctx = mp.get_context("forkserver")
        return ProcessPoolExecutor(
            self.workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(self.limits.max_memory_bytes, os.getpid()),
        )

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken:
                return  # someone else already replaced it
            for proc in list(getattr(broken, "_processes", {}).values()):
                if proc.is_alive():
                    proc.kill()
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            self.restarts += 1
            log.warning("decode pool restarted (%d so far)", self.restarts)

    def _submit(self, fn: Any, *args: Any) -> tuple[ProcessPoolExecutor, Future]:
        with self._lock:
            executor = self._executor
        try:
            return executor, executor.submit(fn, *args)
        except BrokenProcessPool:
            self._restart(executor)
            with self._lock:
                executor = self._executor
            return executor, executor.submit(fn, *args)

    async def _run(self, fn: Any, *args: Any) -> Any:
        executor, future = self._submit(fn, *args)
        # The worker enforces timeout_s itself; the pool's own bound catches a worker that cannot (a hang in C).
        grace = self.limits.timeout_s + 5.0
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=grace)
        except TimeoutError as err:
            self._restart(executor)
            raise DecodeTimeoutError(
                f"decoding did not finish within {grace:.0f} s and was stopped; send a shorter video"
            ) from err
        except MemoryError as err:
            # RLIMIT_AS made an allocation fail inside the worker; the worker itself is still sound.
            raise VideoTooLargeError(
                f"decoding needed more than the {self.limits.max_memory_bytes / 1024**3:.1f} GiB memory limit; "
                "send a smaller or lower-resolution video"
            ) from err
        except BrokenProcessPool as err:
            self._restart(executor)
            raise DecoderCrashedError(
                "the decoder process died on this file (damaged data or over the memory limit)"
            ) from err

    async def probe(self, path: str | os.PathLike[str]) -> VideoInfo:
        return await self._run(probe, str(path), self.limits)

    async def sample(
        self, path: str | os.PathLike[str], spec: SamplingSpec, info: VideoInfo | None = None
    ) -> SampledVideo:
        """Sample in the workers. A plan whose GOP runs cost more than a few frames (exact, or fast misses) is
        split into at most `workers` runs decoded concurrently, one task each, every task under the worker's
        address-space cap; the merged frames are those of a single decode."""
        start = time.perf_counter()
        if info is None or not info.keyframes:
            info = await self.probe(path)
        if info.container == ANIMATED_WEBP:  # Pillow decodes it whole; GOP runs are a PyAV notion
            return await self._run(sample_frames, str(path), spec, self.limits, info)
        probed = time.perf_counter()
        rp = plan_runs(info, spec, self.workers)
        times, flags, runs = rp.times, rp.flags, rp.runs
        if len(runs) == 1:
            return await self._run(sample_frames, str(path), spec, self.limits, info)
        parts = await asyncio.gather(
            *(
                self._run(
                    sample_part,
                    str(path),
                    info,
                    times[r.start : r.stop],
                    flags[r.start : r.stop],
                    spec.size,
                    self.limits,
                )
                for r in runs
            )
        )
        frames, stamps, decoded, rotation = merge(rp.order, list(parts))
        info.rotation = rotation
        return sampled_video(info, frames, stamps, decoded, rp, start, probed)

    async def image(self, path: str | os.PathLike[str], spec: SamplingSpec) -> SampledVideo:
        """A still image as a one-frame video (chat image_url parts)."""
        return await self._run(image_as_video, str(path), spec, self.limits)

    def close(self) -> None:
        with self._lock:
            executor = self._executor
        for proc in list(getattr(executor, "_processes", {}).values()):
            if proc.is_alive():
                proc.kill()
        executor.shutdown(wait=False, cancel_futures=True)
