"""Rate limits at the gateway, without an engine (the jobs list route needs only auth, limits and state): who a
request counts against (API key's tenant, else the client address through trusted proxies only) and the
RateLimit-* / Retry-After headers."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from videoqa.service.app import create_app
from videoqa.service.metrics import Metrics
from videoqa.service.ratelimit import client_address
from videoqa.service.settings import Settings
from videoqa.service.state import create_state

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.9", None, "203.0.113.9"),  # no proxy
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # an untrusted peer's header is ignored
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),  # one trusted proxy
        ("10.1.2.3", "1.1.1.1, 198.51.100.1, 10.9.9.9", "198.51.100.1"),  # spoofed left part skipped
        ("10.1.2.3", "10.4.4.4, 10.5.5.5", "10.4.4.4"),  # only proxies: the leftmost is the origin
        ("fd00::1", "2001:db8:0:0::7", "2001:db8::7"),  # IPv6, normalised
        ("10.1.2.3", " , ", "10.1.2.3"),  # empty header
        (None, "198.51.100.1", "unknown"),
    ],
)
def test_client_address(peer: str | None, xff: str | None, client: str) -> None:
    assert client_address(peer, xff, PROXIES) == client


def _app(**values: object):  # noqa: ANN202
    settings = Settings(**values)
    app = create_app(settings)
    # What auth, limits and the jobs list read (no lifespan: no engine is started).
    app.state.settings, app.state.state, app.state.metrics = settings, create_state(None), Metrics()
    return app


async def _get(app, peer: str, xff: str | None = None, key: str | None = None) -> httpx.Response:  # noqa: ANN001
    headers = {"X-Forwarded-For": xff} if xff else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    transport = httpx.ASGITransport(app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.get("/v1/jobs", headers=headers)


async def test_limits_follow_the_client_behind_a_trusted_proxy_with_headers() -> None:
    app = _app(rate_limit_per_minute=2, trusted_proxies=["10.0.0.0/8"])
    first, second = [await _get(app, "10.0.0.5", "198.51.100.1") for _ in range(2)]
    assert first.status_code == second.status_code == 200
    assert (first.headers["RateLimit-Limit"], first.headers["RateLimit-Remaining"]) == ("2", "1")
    assert second.headers["RateLimit-Remaining"] == "0" and first.headers["RateLimit-Policy"] == "2;w=60"
    assert 55 <= int(first.headers["RateLimit-Reset"]) <= 60
    denied = await _get(app, "10.0.0.5", "198.51.100.1")
    assert denied.status_code == 429 and denied.json()["error"]["code"] == "rate_limit_exceeded"
    assert 55 <= int(denied.headers["Retry-After"]) <= 60 and denied.headers["RateLimit-Remaining"] == "0"
    # Another user behind the same proxy has a budget of its own.
    assert (await _get(app, "10.0.0.5", "198.51.100.2")).status_code == 200
    # A client that writes the header itself is counted by its own address, whatever it claims.
    for claimed in ("198.51.100.3", "198.51.100.4", "198.51.100.5"):
        last = await _get(app, "203.0.113.7", claimed)
    assert last.status_code == 429


async def test_without_trusted_proxies_forwarded_for_is_ignored() -> None:
    app = _app(rate_limit_per_minute=1)
    assert (await _get(app, "10.0.0.5", "198.51.100.1")).status_code == 200
    assert (await _get(app, "10.0.0.5", "198.51.100.2")).status_code == 429  # same peer, same bucket


async def test_limits_are_per_tenant_key_not_per_address() -> None:
    app = _app(rate_limit_per_minute=1, api_keys="key-a,key-b")
    assert (await _get(app, "203.0.113.1", key="key-a")).status_code == 200
    assert (await _get(app, "203.0.113.2", key="key-a")).status_code == 429  # same key from elsewhere
    assert (await _get(app, "203.0.113.1", key="key-b")).status_code == 200


def test_bad_trusted_proxy_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(trusted_proxies=["not-a-network"])
