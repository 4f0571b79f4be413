"""Admission: at most `max_inflight` generation requests at once, a bounded FIFO of waiters behind them.

A burst within capacity (in flight + waiting) waits for a slot instead of failing; past the queue, or past
`max_wait_s` in it, a request is refused with 503 and a Retry-After derived from the measured service rate. A
waiter whose task is cancelled (its client disconnected) leaves the queue; a slot handed to it at that moment
goes on to the next waiter. Slots pass straight from a finishing request to the oldest waiter, so a newcomer
never overtakes the queue.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from videoqa.service.errors import APIError
from videoqa.service.metrics import Metrics

FALLBACK_RETRY_S = 2
"""Retry-After before any request has finished (no service rate measured yet)."""
MAX_RETRY_S = 60


class Overloaded(APIError):
    """503 + Retry-After: no slot now and no room (or no time left) to wait for one."""

    def __init__(self, message: str, retry_after_s: int, reason: str) -> None:
        super().__init__(503, message, "overloaded", headers={"Retry-After": str(retry_after_s)})
        self.reason, self.retry_after_s = reason, retry_after_s


class Slot:
    """An admitted request's place; released exactly once (the context manager releases it too)."""

    def __init__(self, admission: Admission) -> None:
        self._admission, self.held = admission, True
        self.granted_at = admission.clock()

    def release(self) -> None:
        if self.held:
            self.held = False
            self._admission._release(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Admission:
    def __init__(
        self,
        max_inflight: int,
        max_waiting: int,
        max_wait_s: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_inflight, self.max_waiting, self.max_wait_s = max_inflight, max_waiting, max_wait_s
        self.metrics, self.clock = metrics, clock
        self.inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._hold_s: float | None = None
        """Moving average of how long a request holds its slot (the service time)."""

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def service_rate(self) -> float | None:
        """Requests finished per second when every slot is busy: slots / mean service time (None: not measured
        yet). Slot hold times, not completions per second, so an idle hour does not read as a slow server."""
        if self._hold_s is None:
            return None
        return self.max_inflight / max(self._hold_s, 1e-3)

    def retry_after(self) -> int:
        """Seconds until the queue as it is now has drained at the measured rate, so a retry finds room."""
        rate = self.service_rate()
        if rate is None:
            return FALLBACK_RETRY_S
        return min(max(math.ceil((self.waiting + 1) / rate), 1), MAX_RETRY_S)

    def refuse(self, reason: str, message: str) -> Overloaded:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()
        retry = self.retry_after()
        return Overloaded(f"{message}; retry in {retry} s", retry, reason)

    async def acquire(self) -> Slot:
        """A slot now, or after waiting in line (FIFO) for at most `max_wait_s`; else Overloaded."""
        if self.inflight < self.max_inflight and not self._waiters:
            self.inflight += 1
            self._observe(waited=0.0)
            return Slot(self)
        if len(self._waiters) >= self.max_waiting:
            raise self.refuse("queue_full", f"server busy ({self.inflight} requests in flight, {self.waiting} waiting)")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        start = self.clock()
        self._observe()
        try:
            # asyncio.wait, not wait_for: the timeout must not cancel a future that release() already resolved.
            await asyncio.wait({future}, timeout=self.max_wait_s)
        except BaseException:  # cancelled: the client went away while waiting
            self._leave(future)
            raise
        if not future.done():
            self._leave(future)
            raise self.refuse(
                "wait_timeout", f"server busy: no slot within {self.max_wait_s:g} s ({self.waiting} still waiting)"
            )
        self._observe(waited=self.clock() - start)
        return Slot(self)  # release() counted this slot in `inflight` when it handed it over

    def _leave(self, future: asyncio.Future[None]) -> None:
        if future.done() and not future.cancelled():  # handed a slot at the last moment: pass it on
            self._hand_over()
        else:
            future.cancel()
            self._waiters.remove(future)
        self._observe()

    def _release(self, slot: Slot) -> None:
        held = self.clock() - slot.granted_at
        self._hold_s = held if self._hold_s is None else 0.8 * self._hold_s + 0.2 * held
        self._hand_over()
        self._observe()

    def _hand_over(self) -> None:
        """A slot came free: the oldest waiter takes it (it stays counted in flight), else it is returned."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.inflight -= 1

    def _observe(self, waited: float | None = None) -> None:
        if self.metrics is None:
            return
        self.metrics.inflight.set(self.inflight)
        self.metrics.waiting.set(len(self._waiters))
        if waited is not None:
            self.metrics.admission_wait.observe(waited)
