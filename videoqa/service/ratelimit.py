"""Who a request counts against, and the standard rate-limit headers.

Key: the tenant of the API key (deps.authorize); without keys, the client address. Behind a load balancer or
ingress every connection comes from the proxy, so `X-Forwarded-For` is read, but only from peers in
VIDEOQA_TRUSTED_PROXIES, and walked from the right: each proxy appends the address it saw, so the first hop
(from the right) that is not a trusted proxy is the client, and anything a client wrote further left is ignored
(the rule of uvicorn's ProxyHeadersMiddleware and Werkzeug's ProxyFix).

Headers: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds) and `RateLimit-Policy`
(`<limit>;w=<window s>`), from the IETF httpapi draft "RateLimit header fields for HTTP" as most servers
emit them, on every limited response; `Retry-After` on a 429.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from videoqa.service.state import RateDecision

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address for rate limiting (see the module docstring)."""
    if not peer:
        return "unknown"
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            ip = _ip(hop)
            return str(ip) if ip is not None else hop[:64]
    return hops[0][:64] if hops else peer  # every hop is a trusted proxy: the leftmost is the origin


def rate_headers(decision: RateDecision, window_s: float) -> dict[str, str]:
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_after_s)),
        "RateLimit-Policy": f"{decision.limit};w={round(window_s)}",
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(math.ceil(decision.retry_after_s), 1))
    return headers


class RateLimitHeaders:
    """Adds the headers deps.rate_limit left in the request's scope state to the response (streams included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            extra = (scope.get("state") or {}).get("rate_headers")
            if message["type"] == "http.response.start" and extra:
                present = {k.lower() for k, _ in message.get("headers", [])}
                added = [
                    (k.lower().encode(), v.encode()) for k, v in extra.items() if k.lower().encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
