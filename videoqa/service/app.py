"""The FastAPI app: heavy objects built once in the lifespan, routers, middleware, error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from videoqa.model.chat import ChatFormat
from videoqa.service import errors
from videoqa.service.metrics import Metrics
from videoqa.service.ratelimit import RateLimitHeaders
from videoqa.service.requests import RequestIdMiddleware, noted
from videoqa.service.routers import chat, files, health, jobs, video
from videoqa.service.serving import VideoQAService
from videoqa.service.settings import Settings
from videoqa.service.state import State, build_state
from videoqa.service.tracing import build as build_tracing
from videoqa.video import DecodeLimits, DecodePool

if TYPE_CHECKING:
    from videoqa.model.engine import VideoQAEngine

log = logging.getLogger("videoqa.service")
access_log = logging.getLogger("videoqa.access")


class BodyLimit:
    """Refuse bodies over the cap while they stream in (413), before they fill memory or disk."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        cap = self.settings.max_upload_bytes if multipart else self.settings.max_json_bytes
        declared = int(headers.get(b"content-length", b"0") or 0)
        if declared > cap:
            return await self._reject(send, cap)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send, cap)

    @staticmethod
    async def _reject(send: Send, cap: int) -> None:
        response = errors.error_response(413, f"request body over the limit of {cap} bytes", "request_too_large")
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


class Observe:
    """Per-request metrics and the access log line (pure ASGI: Starlette's BaseHTTPMiddleware, which
    `@app.middleware("http")` makes, hides a client's disconnect from `Request.is_disconnected()`, so a request
    waiting for admission or for its answer would never notice that its client left)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._record(scope, status, time.perf_counter() - start)

    @staticmethod
    def _record(scope: Scope, status: int, elapsed: float) -> None:
        path = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        state = getattr(scope.get("app"), "state", None)
        metrics = getattr(state, "metrics", None)
        if metrics is not None:
            metrics.requests.labels(path, method, str(status)).inc()
            metrics.latency.labels(path).observe(elapsed)
        # The audit line names the tenant (noted by deps.authorize: its name, never the key).
        fields = {"route": path, "method": method, "status": status, "seconds": round(elapsed, 4), **noted()}
        access_log.info(
            "%s %s %s %.3fs tenant=%s",
            method,
            path,
            status,
            elapsed,
            fields.get("tenant", "-"),
            extra={"fields": fields},
        )


def _make_engine(settings: Settings, state: State) -> tuple[VideoQAEngine, ChatFormat | None]:
    """The engine, and the chat format when a local checkpoint has the tokenizer (split mode without `model`
    gets it from the engine once that is up)."""
    if settings.engine_url:
        from videoqa.service.engine_client import RemoteEngine

        chat_format = ChatFormat.from_pretrained(settings.model) if settings.model else None
        # Routing counts every gateway's requests when the state is shared (Redis), this one's otherwise.
        remote = RemoteEngine(settings.engine_url, token=settings.engine_api_token, load=state.engines)
        return remote, chat_format
    engine = settings.local_engine()
    return engine, ChatFormat.from_pretrained(engine.checkpoint)


def create_app(settings: Settings | None = None, engine: VideoQAEngine | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal engine
        # First: a tracing setting that cannot work (the otel extra missing) stops the start before any engine.
        tracing = build_tracing(settings.otel_exporter)
        chat_format = None
        state = build_state(settings)
        if engine is None:
            engine, chat_format = _make_engine(settings, state)
        pool = DecodePool(
            settings.decode_workers,
            DecodeLimits(
                timeout_s=settings.decode_timeout_s,
                max_duration_s=settings.max_video_seconds,
                max_pixels=settings.max_video_pixels,
                max_bytes=max(settings.max_upload_bytes, settings.fetch_max_bytes),
            ),
        )
        metrics = Metrics()
        metrics.watch_decode_pool(pool)
        service = VideoQAService(settings, engine, state, pool, metrics, chat_format, tracing)
        app.state.settings, app.state.engine, app.state.state = settings, engine, state
        app.state.metrics, app.state.service, app.state.engine_error = metrics, service, None
        app.state.tracing = tracing
        tracing.start(app)

        async def start_engine() -> None:
            try:
                await engine.start()
                if service.generation.chat_format is None:
                    service.generation.chat_format = ChatFormat(await engine.tokenizer())
                log.info("engine ready: %s", engine.model_name)
            except Exception as err:  # keep serving /healthz and /readyz (which reports it)
                log.exception("engine failed to start")
                app.state.engine_error = str(err)

        # The engine loads in the background so liveness answers during a long model load.
        starter = asyncio.create_task(start_engine())
        workers = [
            asyncio.create_task(_run_worker(service, i, settings.job_lease_s)) for i in range(settings.job_workers)
        ]
        try:
            yield
        finally:
            for task in (*workers, starter):
                task.cancel()
            for task in (*workers, starter):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            pool.close()
            await engine.stop()
            await state.close()
            tracing.shutdown()  # last: exports the spans still queued

    app = FastAPI(
        title="videoqa",
        version="0.1.0",
        lifespan=lifespan,
        description="LLaVA-Video question answering: REST, OpenAI-compatible chat, uploads and jobs.",
    )
    errors.install(app)
    for router in (files.router, video.router, chat.router, jobs.router, health.router):
        app.include_router(router)

    app.add_middleware(Observe)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(RequestIdMiddleware)  # outermost: every response and log line of a request has its id
    return app


async def _run_worker(service: VideoQAService, index: int, lease_s: float) -> None:
    from videoqa.service.jobs_worker import run_worker

    await run_worker(service, index, lease_s)
