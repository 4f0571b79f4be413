"""FastAPI dependencies: the serving core and its collaborators, auth (API key -> tenant) and rate limits.

Routers declare what they use with the `Annotated` aliases at the end (`service: Service`, `files: Files`,
`caller: Caller`), so each gets the typed object it needs and tests can override one with
`app.dependency_overrides`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from videoqa.service.errors import APIError
from videoqa.service.filestore import FileStore
from videoqa.service.ratelimit import client_address, rate_headers
from videoqa.service.requests import note
from videoqa.service.serving import VideoQAService
from videoqa.service.tenants import ANONYMOUS, Principal, hash_key


def get_service(request: Request) -> VideoQAService:
    service: VideoQAService = request.app.state.service  # app.state is untyped: create_app puts it there
    return service


def get_files(request: Request) -> FileStore:
    return get_service(request).files


async def authorize(request: Request) -> Principal:
    """Bearer API key -> the calling tenant (or an operator). Without tenant keys every caller is `anonymous`.

    Only the key's sha256 is compared (the configured hashes), and the key itself is never stored or logged.
    """
    settings = request.app.state.settings
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else ""
    digest = hash_key(key) if key else ""
    principal: Principal | None = None
    if digest in settings.admin_keyring:
        name = settings.admin_keyring[digest]
        principal = Principal(tenant=name, admin=True, rate_key=f"admin:{name}")
    elif digest in settings.tenant_keys:
        name = settings.tenant_keys[digest]
        principal = Principal(tenant=name, rate_key=f"tenant:{name}")
    elif not settings.tenant_keys:
        peer = request.client.host if request.client else None
        client = client_address(peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies)
        principal = Principal(tenant=ANONYMOUS, rate_key=f"ip:{client}")
    if principal is None:
        raise APIError(
            401,
            "missing or invalid API key; send 'Authorization: Bearer <key>'",
            "invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    note(tenant=principal.tenant)  # for the request's log lines (app.py)
    return principal


async def rate_limit(request: Request, principal: Principal = Depends(authorize)) -> Principal:
    settings = request.app.state.settings
    if settings.rate_limit_per_minute > 0:
        decision = await request.app.state.state.rate_hit(principal.rate_key, settings.rate_limit_per_minute, 60.0)
        headers = rate_headers(decision, 60.0)
        request.scope.setdefault("state", {})["rate_headers"] = headers  # ratelimit.RateLimitHeaders adds them
        if not decision.allowed:
            request.app.state.metrics.rejected.labels("rate_limited").inc()
            raise APIError(
                429,
                f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded; "
                f"retry in {headers['Retry-After']} s",
                "rate_limit_exceeded",
                headers=headers,
            )
    return principal


Service = Annotated[VideoQAService, Depends(get_service)]
"""The serving core (admission, prompt + frames, engine)."""
Files = Annotated[FileStore, Depends(get_files)]
"""The file store (uploads, registry, fetching)."""
Caller = Annotated[Principal, Depends(rate_limit)]
"""The authenticated, rate-limited caller."""
