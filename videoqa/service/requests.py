"""Request ids: `x-request-id` accepted from the client (or generated), echoed on the response, and carried by
every log line and error body of that request."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_current: contextvars.ContextVar[str] = contextvars.ContextVar("videoqa_request_id", default="-")
_fields: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "videoqa_request_fields", default=None
)
# Ids end up in logs and headers: keep what clients send short and printable.
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def current_request_id() -> str:
    """The id of the request being served in this task ("-" outside requests)."""
    return _current.get()


def note(**fields: object) -> None:
    """Record facts about the current request (frames, visual tokens, decode seconds...) for its log line."""
    current = _fields.get()
    if current is not None:
        current.update(fields)


def noted() -> dict[str, object]:
    """What was noted for the current request so far."""
    return dict(_fields.get() or {})


def request_id(request: object) -> str:
    """The id of a Starlette request (set by RequestIdMiddleware)."""
    return getattr(getattr(request, "state", None), "request_id", None) or current_request_id()


class RequestIdMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so the context variable is set in the task that runs the route and
    its streaming body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = dict(scope.get("headers") or []).get(HEADER.encode(), b"").decode("latin-1")
        rid = sent if _VALID.match(sent) else f"req-{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = rid
        token = _current.set(rid)
        fields_token = _fields.set({})

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER.encode()]
                message = {**message, "headers": [*headers, (HEADER.encode(), rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
            _fields.reset(fields_token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message, and any `fields` passed as extra."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", current_request_id()),
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Root logging with the request id on every line (text for development, JSON for log pipelines)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record (for formats and JSON logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True
