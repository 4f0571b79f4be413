"""The one place where errors become HTTP responses (OpenAI's error shape for everything under /v1)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from videoqa.model.layout import LayoutError
from videoqa.service.fetch import FetchError
from videoqa.service.requests import HEADER as REQUEST_ID_HEADER
from videoqa.service.requests import current_request_id
from videoqa.service.state import StateUnavailableError
from videoqa.video.errors import VideoError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class APIError(Exception):
    """An error with an HTTP status, raised anywhere below the routers."""

    def __init__(
        self, status: int, message: str, code: str, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers or {}


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
    504: "server_error",
    502: "server_error",
}


def error_response(
    status: int,
    message: str,
    code: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorBody(
            message=message,
            type=_TYPES.get(status, "server_error"),
            param=param,
            code=code,
            request_id=request_id or current_request_id(),
        )
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def unknown_field(name: str) -> APIError:
    """The refusal of a field this server does not take: the same answer whether the request model (JSON, via
    validation_error) or a router reading a multipart form finds it."""
    message = f"unknown field {name!r}: this server takes the fields listed in docs/service.md"
    return APIError(400, message, "unknown_parameter", name)


def check_form(form: FormData, allowed: Collection[str]) -> None:
    """Every multipart field is used or refused by name, as JSON fields are (the request models forbid unknown
    ones): a field not in `allowed` (besides the `file` upload), a field given twice, or an upload anywhere but
    `file` is refused, never dropped."""
    counts = Counter(name for name, _ in form.multi_items())
    for name, value in form.multi_items():
        if name != "file" and name not in allowed:
            raise unknown_field(name)
        if counts[name] > 1:
            raise APIError(400, f"field {name!r} is given more than once", "invalid_request", name)
        if name != "file" and not isinstance(value, str):
            raise APIError(400, f"field {name!r} is an upload; only 'file' takes one", "invalid_request", name)


def validation_error(errors: Sequence[Any]) -> JSONResponse:
    """A request that does not validate -> 400 naming the first bad field."""
    first = errors[0] if errors else {}
    path = list(first.get("loc", ()))
    if path and path[0] in ("body", "query"):  # where it was is clear from the request; name the field
        path = path[1:]
    loc = ".".join(str(p) for p in path)
    if first.get("type") == "extra_forbidden":
        err = unknown_field(loc)
        return error_response(err.status, err.message, err.code, err.param)
    return error_response(
        400, f"{loc or 'body'}: {first.get('msg', 'invalid request')}", "invalid_request", loc or None
    )


# Responses every /v1 route may give, for the OpenAPI schema.
# The key type FastAPI's `responses=` takes (dict is invariant in its keys).
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        401: "Missing or wrong API key",
        403: "URL points at a non-public address",
        404: "Unknown file, job or model",
        413: "Upload, body or video too large",
        415: "Not a video, or an unsupported container/codec",
        400: "Invalid or unsupported fields (param names the field), or over the frame/token budget",
        422: "Undecodable video",
        429: "Rate limit exceeded (see Retry-After)",
        503: "Engine not ready or overloaded (see Retry-After)",
    }.items()
}


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, err: APIError) -> JSONResponse:
        return error_response(err.status, err.message, err.code, err.param, err.headers)

    @app.exception_handler(VideoError)
    async def _video(_: Request, err: VideoError) -> JSONResponse:
        return error_response(err.http_status, str(err), err.code, "video")

    @app.exception_handler(FetchError)
    async def _fetch(_: Request, err: FetchError) -> JSONResponse:
        return error_response(err.http_status, str(err), err.code, "video_url")

    @app.exception_handler(LayoutError)
    async def _layout(_: Request, err: LayoutError) -> JSONResponse:
        return error_response(422, str(err), "invalid_layout")

    @app.exception_handler(StateUnavailableError)
    async def _state(_: Request, err: StateUnavailableError) -> JSONResponse:
        return error_response(
            503,
            f"shared state unavailable: {err}",
            "state_unavailable",
            headers={"Retry-After": str(err.retry_after_s)},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        # 400 with `param`, as OpenAI and vLLM answer (the SDK raises BadRequestError), not FastAPI's 422.
        return validation_error(err.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), "http_error", headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error")
        # Starlette answers unhandled errors outermost, after RequestIdMiddleware has returned (its context
        # variable is reset and its header not added), so the id comes from the scope it left.
        rid = request.scope.get("state", {}).get("request_id")
        headers = {REQUEST_ID_HEADER: rid} if rid else None
        return error_response(
            500, "internal error; the request was not completed", "internal_error", headers=headers, request_id=rid
        )
