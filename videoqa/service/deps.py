"""FastAPI dependencies: the service object, auth and rate limits."""

from __future__ import annotations

from fastapi import Depends, Request

from videoqa.service.errors import APIError
from videoqa.service.serving import VideoQAService


def get_service(request: Request) -> VideoQAService:
    return request.app.state.service


async def authorize(request: Request) -> str:
    """Bearer API key check (open when VIDEOQA_API_KEYS is empty); returns the caller's rate-limit identity."""
    settings = request.app.state.settings
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if settings.keys and key not in settings.keys:
        raise APIError(
            401,
            "missing or invalid API key; send 'Authorization: Bearer <key>'",
            "invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return f"key:{key}" if key else f"ip:{request.client.host if request.client else 'unknown'}"


async def rate_limit(request: Request, identity: str = Depends(authorize)) -> str:
    settings = request.app.state.settings
    if settings.rate_limit_per_minute > 0:
        decision = await request.app.state.state.rate_hit(identity, settings.rate_limit_per_minute, 60.0)
        if not decision.allowed:
            request.app.state.metrics.rejected.labels("rate_limited").inc()
            retry = max(int(decision.retry_after_s + 0.999), 1)
            raise APIError(
                429,
                f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded; retry in {retry} s",
                "rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
    return identity
