"""Admission (videoqa/service/admission.py) on its own: real asyncio tasks competing for slots, no engine.

The HTTP-level check (a gateway with a small max_inflight) is in test_auth_limits.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from videoqa.service.admission import FALLBACK_RETRY_S, Admission, Overloaded, Slot
from videoqa.service.metrics import Metrics


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (yielding to the other tasks) until `condition` holds, or fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


async def test_a_burst_within_capacity_waits_and_is_served_in_arrival_order() -> None:
    adm = Admission(max_inflight=2, max_waiting=5, max_wait_s=60)
    holders = [await adm.acquire(), await adm.acquire()]
    served: list[int] = []
    done = asyncio.Event()

    async def client(i: int) -> None:
        with await adm.acquire():
            served.append(i)
            await done.wait()

    waiters = []
    for i in range(5):  # one at a time, so arrival order is known
        waiters.append(asyncio.create_task(client(i)))
        await until(lambda i=i: adm.waiting == i + 1)
    with pytest.raises(Overloaded) as refused:  # 2 in flight + 5 waiting: the 8th is past the queue
        await adm.acquire()
    assert refused.value.status == 503 and refused.value.reason == "queue_full"
    assert refused.value.headers["Retry-After"] == str(FALLBACK_RETRY_S)

    holders[0].release()
    await until(lambda: served == [0])
    holders[1].release()
    await until(lambda: served == [0, 1])
    assert adm.inflight == 2 and adm.waiting == 3
    done.set()  # each finishing client hands its slot to the next in line
    await asyncio.gather(*waiters)
    assert served == [0, 1, 2, 3, 4] and adm.inflight == 0 and adm.waiting == 0


async def test_a_waiter_past_the_deadline_gets_503_and_leaves_the_queue() -> None:
    metrics = Metrics()
    adm = Admission(max_inflight=1, max_waiting=4, max_wait_s=0.05, metrics=metrics)
    holder = await adm.acquire()
    with pytest.raises(Overloaded) as refused:
        await adm.acquire()
    assert refused.value.reason == "wait_timeout" and "Retry-After" in refused.value.headers
    assert adm.waiting == 0
    assert metrics.registry.get_sample_value("videoqa_rejected_total", {"reason": "wait_timeout"}) == 1
    holder.release()
    assert adm.inflight == 0  # the timed-out waiter holds nothing


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_gets_the_slot() -> None:
    adm = Admission(max_inflight=1, max_waiting=4, max_wait_s=60)
    holder = await adm.acquire()
    gone = asyncio.create_task(adm.acquire())
    await until(lambda: adm.waiting == 1)
    behind = asyncio.create_task(adm.acquire())
    await until(lambda: adm.waiting == 2)
    gone.cancel()  # what cancel_on_disconnect does when the client disconnects
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert adm.waiting == 1
    holder.release()
    slot = await behind
    assert isinstance(slot, Slot) and adm.inflight == 1
    slot.release()
    assert adm.inflight == 0


async def test_a_slot_handed_to_a_waiter_that_is_cancelled_at_that_moment_goes_to_the_next() -> None:
    adm = Admission(max_inflight=1, max_waiting=4, max_wait_s=60)
    holder = await adm.acquire()
    first = asyncio.create_task(adm.acquire())
    await until(lambda: adm.waiting == 1)
    second = asyncio.create_task(adm.acquire())
    await until(lambda: adm.waiting == 2)
    holder.release()  # hands the slot to `first`, which has not run since
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    slot = await second  # without the hand-on, the slot would be lost with `first` and this would wait for ever
    assert adm.inflight == 1
    slot.release()
    assert adm.inflight == 0 and adm.waiting == 0


async def test_retry_after_follows_the_measured_service_rate() -> None:
    now = [0.0]
    adm = Admission(max_inflight=2, max_waiting=3, max_wait_s=60, clock=lambda: now[0])
    a, b = await adm.acquire(), await adm.acquire()
    now[0] = 4.0  # both held their slot 4 s: 2 slots / 4 s = 0.5 requests per second
    a.release()
    b.release()
    held = [await adm.acquire(), await adm.acquire()]
    waiters = [asyncio.create_task(adm.acquire()) for _ in range(3)]
    await until(lambda: adm.waiting == 3)
    with pytest.raises(Overloaded) as refused:
        await adm.acquire()
    # A retry finds room once the 3 waiters and itself are through: 4 requests / 0.5 per s = 8 s.
    assert refused.value.headers["Retry-After"] == "8" and refused.value.retry_after_s == 8
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    for slot in held:
        slot.release()
    assert adm.inflight == 0 and adm.waiting == 0


async def test_no_waiting_line_refuses_at_once_when_full() -> None:
    adm = Admission(max_inflight=1, max_waiting=0, max_wait_s=60)
    with await adm.acquire():
        with pytest.raises(Overloaded) as refused:
            await adm.acquire()
        assert refused.value.reason == "queue_full"
    assert adm.inflight == 0
