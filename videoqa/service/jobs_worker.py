"""Background job workers: claim from the shared queue, keep the lease alive, store the result.

At-least-once: a worker killed mid-job stops heartbeating, its lease expires, and any gateway's worker
requeues and redoes it. Results are idempotent (the first completion wins). A busy engine (503) defers the job
with backoff and costs no attempt; other 5xx retry with backoff while attempts last; 4xx and bad input are final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket

from videoqa.service.errors import APIError
from videoqa.service.protocol import JobRequest
from videoqa.service.serving import CAPTION_PROMPT, VideoQAService
from videoqa.service.state import StateUnavailableError
from videoqa.video.errors import VideoError

log = logging.getLogger(__name__)


BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0


def backoff_s(n: int) -> float:
    """Delay before the (n+1)-th try: exponential, capped, with "equal jitter" (half fixed, half random) so
    workers that met the same busy engine do not all come back at once (AWS Architecture Blog, "Exponential
    Backoff And Jitter", 2015)."""
    full: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(n - 1, 0))
    return full / 2 + random.uniform(0, full / 2)


def _retry_after(err: APIError) -> float:
    try:
        return float(err.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0


async def _heartbeat(service: VideoQAService, job_id: str, worker: str, lease_s: float) -> None:
    while True:
        await asyncio.sleep(lease_s / 3)
        with contextlib.suppress(StateUnavailableError):
            if not await service.state.job_heartbeat(job_id, worker, lease_s):
                return


async def run_worker(service: VideoQAService, index: int, lease_s: float, poll_s: float = 0.25) -> None:
    worker = f"{socket.gethostname()}:{os.getpid()}:{index}"
    state, metrics = service.state, service.metrics
    while True:
        try:
            if await state.job_requeue_expired():
                metrics.jobs.labels("requeued").inc()
            job = await state.job_claim(worker, lease_s) if service.ready() else None
        except StateUnavailableError:
            await asyncio.sleep(1.0)
            continue
        if job is None:
            await asyncio.sleep(poll_s)
            continue
        metrics.jobs.labels("started").inc()
        beat = asyncio.create_task(_heartbeat(service, job.id, worker, lease_s))
        try:
            req = JobRequest.model_validate(job.payload)
            question = req.question if req.task == "qa" else CAPTION_PROMPT
            answer = await service.ask(
                req.video_source(),
                question or CAPTION_PROMPT,
                req.sampling_fields(),
                req.generation_fields(),
                tenant=job.tenant,
            )
            frames = answer.frames
            result = {
                "answer": answer.text,
                "finish_reason": answer.finish_reason,
                "usage": answer.usage.model_dump(),
                "frames": len(frames.timestamps) if frames else 0,
                "timestamps": frames.timestamps if frames else [],
            }
            if await state.job_complete(job.id, worker, result):
                metrics.jobs.labels("succeeded").inc()
            else:  # our lease lapsed: the job is queued again or running elsewhere, and that run's result counts
                log.warning("job %s: lease lost before its result was stored; the result is dropped", job.id)
                metrics.jobs.labels("lease_lost").inc()
        except asyncio.CancelledError:
            raise  # shutdown: the lease lapses and another worker redoes it
        except StateUnavailableError:  # Redis went away mid-job (e.g. the file lookup): not the job's fault
            with contextlib.suppress(StateUnavailableError):  # if still down, the lease lapses and it is redone
                await state.job_defer(job.id, worker, backoff_s(job.deferrals))
            metrics.jobs.labels("deferred").inc()
        except APIError as err:
            error = {"message": err.message, "code": err.code}
            if err.status == 503:  # the engine is busy or loading: not the job's fault, so no attempt is used
                delay = max(backoff_s(job.deferrals), _retry_after(err))
                with contextlib.suppress(StateUnavailableError):
                    await state.job_defer(job.id, worker, delay)
                metrics.jobs.labels("deferred").inc()
            elif err.status >= 500:  # may pass on a later attempt
                with contextlib.suppress(StateUnavailableError):
                    await state.job_fail(job.id, worker, error, True, backoff_s(job.attempts))
                metrics.jobs.labels("retried").inc()
            else:  # 4xx: the request itself is wrong (unknown file, over budget); retrying cannot help
                # Suppressed like the others: an outage here must not end this worker's loop (it did, silently,
                # leaving the gateway without a worker). The lease then lapses and the job is run again.
                with contextlib.suppress(StateUnavailableError):
                    await state.job_fail(job.id, worker, error, False)
                metrics.jobs.labels("failed").inc()
        except (VideoError, ValueError) as err:  # the input is bad: retrying cannot help
            error = {"message": str(err), "code": getattr(err, "code", "invalid")}
            with contextlib.suppress(StateUnavailableError):
                await state.job_fail(job.id, worker, error, False)
            metrics.jobs.labels("failed").inc()
        except Exception as err:
            log.exception("job %s failed", job.id)
            with contextlib.suppress(StateUnavailableError):
                await state.job_fail(
                    job.id, worker, {"message": str(err), "code": "internal"}, True, backoff_s(job.attempts)
                )
            metrics.jobs.labels("retried").inc()
        finally:
            beat.cancel()
