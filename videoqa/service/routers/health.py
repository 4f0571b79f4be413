"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from videoqa.service.state import StateUnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Engine loaded (with its tokenizer) and Redis reachable (when configured)",
    responses={503: {"description": "Not ready yet"}},
)
async def readyz(request: Request) -> JSONResponse:
    app = request.app.state
    engine_ok = app.service.ready()  # the engine, and (split mode) the tokenizer fetched from it
    redis_ok = await app.state.ping() if app.state.backend == "redis" else True
    app.metrics.redis_up.set(1 if redis_ok else 0)
    body = {
        "engine": engine_ok,
        "state": app.state.backend,
        "state_ok": redis_ok,
        "error": getattr(app, "engine_error", None),
    }
    return JSONResponse(body, status_code=200 if engine_ok and redis_ok else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    m = request.app.state.metrics
    engine = request.app.state.engine
    m.queue_depth.set(engine.queue_depth())
    try:
        for name, count in (await request.app.state.state.job_counts()).items():
            m.job_backlog.labels(name).set(count)
    except StateUnavailableError:  # Redis is down: no fresh figure (videoqa_redis_up says why)
        m.job_backlog.clear()
    urls = getattr(engine, "urls", None)  # split mode: the engines this gateway routes to
    if urls:
        try:
            for url, count in (await request.app.state.state.engines.totals(urls)).items():
                m.engine_outstanding.labels(url).set(count)
        except StateUnavailableError:
            m.engine_outstanding.clear()
    # The engine's own vllm:* series (embedded: this process's registry; split mode: fetched from the engine).
    engine_series = await engine.metrics_text() if hasattr(engine, "metrics_text") else ""
    return Response(generate_latest(m.registry) + engine_series.encode(), media_type=CONTENT_TYPE_LATEST)
