"""An async client for any OpenAI-compatible chat-completions API, used as the teacher of the synthetic-data pipeline.

The pipeline asks a teacher model (GPT-4o, or our own served LLaVA-Video) for captions and JSON question/answer
sets over thousands of clips. At that scale the things that go wrong are ordinary: rate limits, overloaded
servers, dropped connections, slow replies and JSON that is almost, but not quite, what was asked for. This
module absorbs those so the pipeline sees either a value or one `TeacherError` that says what failed:

- transient failures (429, 408, 409, 5xx, connection errors, timeouts) are retried with capped exponential
  backoff and jitter, honouring the server's Retry-After on 429/503;
- other 4xx (bad request, auth, unknown model) fail at once, since repeating them cannot help;
- replies that are not the JSON asked for get a repair turn that quotes the exact error back to the model;
- every request, retry, failure, token and dollar is counted in `HTTPTeacher.usage`, so a run can report what
  the synthetic data cost.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import logging
import mimetypes
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import numpy as np
from PIL import Image
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

__all__ = ["HTTPTeacher", "TeacherError", "TeacherPrompt", "TeacherUsage", "extract_json"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Statuses worth repeating: the request was fine, the server was busy, slow or briefly broken.
_RETRY_4XX = frozenset({408, 409, 429})
# Statuses whose Retry-After we trust (RFC 9110 defines it for 503 and 3xx; every rate limiter sends it on 429).
_RETRY_AFTER_STATUSES = frozenset({429, 503})
# What a validate() callable raises on a bad shape. pydantic's ValidationError is a ValueError; KeyError and
# IndexError are what a hand-written validator that indexes into the parsed value raises.
_VALIDATION_ERRORS = (ValueError, TypeError, KeyError, IndexError)
# How much of a server's error body or a validation error to quote (in exceptions, logs and repair turns).
_QUOTE_CHARS = 2000
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n?(.*?)```", re.DOTALL)


@dataclass
class TeacherPrompt:
    """One question to the teacher: a system prompt, the user's text and optionally the visual context.

    Give either `frames` (uint8 RGB arrays [H, W, 3], sent as low-detail JPEG images, which every vision API
    takes) or `video` (a file sent whole as one data: URL, which our own gateway and video-native servers take).
    """

    system: str
    text: str
    frames: list[np.ndarray] = field(default_factory=list)
    video: Path | None = None


@dataclass
class TeacherUsage:
    """Running totals over a teacher's lifetime, for cost reports and for spotting a misbehaving endpoint."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests that repeated an earlier one (after an error or an invalid reply)
    failures: int = 0  # generate()/generate_json() calls that finally raised TeacherError
    invalid_json: int = 0  # replies that failed JSON parsing or validation
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        """A plain dict, for JSON run reports and metrics."""
        return asdict(self)


class TeacherError(Exception):
    """A teacher call failed for good: the message says what failed, with the HTTP status and attempts made."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class _Retryable(Exception):
    """A failure that another attempt may fix. Internal: the caller only ever sees TeacherError."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class _InvalidReply(_Retryable):
    """The reply arrived but was not the JSON asked for; the next attempt carries a repair turn."""


def extract_json(text: str) -> Any:
    """Parse the JSON in a model's reply, tolerating the wrapping that chat models add around it.

    Tries, in order: the whole reply; the contents of each ``` / ```json fenced block; then the JSON objects and
    arrays that start at a '{' or '[' in the surrounding prose, taking the longest (so "Here you go: [...] Hope
    it helps!" works, and a "[1]" footnote beside the real answer does not win over it). Raises ValueError
    (json.JSONDecodeError where there was a candidate) with the first candidate's error, so a repair turn can
    quote it.
    """
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as e:
        first_error: ValueError = e
    for block in _FENCE.findall(stripped):
        try:
            return json.loads(block.strip())
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    candidate_error: ValueError | None = None
    best: tuple[int, Any] | None = None  # (length, value)
    covered = 0  # brackets before this index lie inside a value already parsed
    for match in re.finditer(r"[\[{]", stripped):
        start = match.start()
        if start < covered:
            continue
        try:
            value, end = decoder.raw_decode(stripped, start)
        except json.JSONDecodeError as e:
            candidate_error = candidate_error or e
            continue
        covered = end
        if best is None or end - start > best[0]:
            best = (end - start, value)
    if best is not None:
        return best[1]
    if candidate_error is None:
        raise ValueError("no JSON object or array found in the reply") from first_error
    raise candidate_error


def _jpeg_data_url(frame: np.ndarray, quality: int = 90) -> str:
    """Encode one RGB frame as a base64 JPEG data: URL (JPEG: a fraction of PNG's size, fine for a teacher)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be uint8 RGB [H, W, 3], got {frame.dtype} {frame.shape}")
    buf = io.BytesIO()
    Image.fromarray(frame, mode="RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _video_data_url(path: Path) -> str:
    """Read a video file into a base64 data: URL, typed from its suffix (mp4 when unknown)."""
    mime, _ = mimetypes.guess_type(path.name)
    if not mime or not mime.startswith("video/"):
        mime = "video/mp4"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _build_messages(prompt: TeacherPrompt) -> list[dict[str, Any]]:
    """The OpenAI chat messages for a prompt: visual parts first, then the text (the order LLaVA was trained on).

    A text-only prompt is sent as a plain string, which every OpenAI-compatible server accepts.
    """
    if prompt.frames and prompt.video is not None:
        raise ValueError("give a TeacherPrompt either frames or a video, not both")
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": _jpeg_data_url(f), "detail": "low"}} for f in prompt.frames
    ]
    if prompt.video is not None:
        parts.append({"type": "video_url", "video_url": {"url": _video_data_url(Path(prompt.video))}})
    if parts:
        parts.append({"type": "text", "text": prompt.text})
        messages.append({"role": "user", "content": parts})
    else:
        messages.append({"role": "user", "content": prompt.text})
    return messages


def _repair_message(error: Exception, parsed: bool) -> str:
    """The user turn that asks the model to fix its reply, quoting exactly what was wrong with it."""
    what = "parsed as JSON but did not have the required structure" if parsed else "was not valid JSON"
    detail = f"{type(error).__name__}: {error}"[:_QUOTE_CHARS]
    return (
        f"Your previous reply {what}.\nError: {detail}\n"
        "Reply again with only the corrected, valid JSON: no prose, no explanations, no code fences."
    )


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(response: httpx.Response) -> str:
    """The server's own explanation of an error: OpenAI-style error.message when present, else the body text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:_QUOTE_CHARS]
        if isinstance(err, str):
            return err[:_QUOTE_CHARS]
        if body.get("detail"):  # FastAPI's default error shape
            return str(body["detail"])[:_QUOTE_CHARS]
    return response.text[:_QUOTE_CHARS] or response.reason_phrase


class HTTPTeacher:
    """Ask an OpenAI-compatible chat-completions endpoint for text or validated JSON, robustly and frugally.

    One instance owns one connection pool; `concurrency` bounds the requests in flight at once (across all
    concurrent calls), which keeps a pipeline with thousands of pending clips within the API's rate limits
    and our own server's admission queue. Use it as an async context manager, or call `aclose()`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 120.0,
        max_attempts: int = 5,
        max_backoff_s: float = 30.0,
        price_prompt_per_mtok: float = 0.0,
        price_completion_per_mtok: float = 0.0,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_backoff_s = max_backoff_s
        self.price_prompt_per_mtok = price_prompt_per_mtok
        self.price_completion_per_mtok = price_completion_per_mtok
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.usage = TeacherUsage()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
        )
        self._semaphore = asyncio.Semaphore(concurrency)
        # Backoff for errors without Retry-After: 0.5 s, 1 s, 2 s, ... plus up to 0.5 s of jitter (so many
        # clients that failed together do not retry together), never more than max_backoff_s.
        first = min(0.5, max_backoff_s)
        self._backoff = wait_exponential_jitter(initial=first, max=max_backoff_s, jitter=first)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def generate(self, prompt: TeacherPrompt) -> str:
        """The teacher's reply text (e.g. a caption). Raises TeacherError once retries are spent."""
        messages = await asyncio.to_thread(_build_messages, prompt)
        return await self._run(messages, None)

    async def generate_json(self, prompt: TeacherPrompt, validate: Callable[[Any], T]) -> T:
        """The teacher's reply parsed as JSON and passed through `validate`, which returns the typed value.

        `validate` raises ValueError/TypeError (pydantic's ValidationError included) on a bad shape. A reply that
        does not parse or validate is sent back with the error as a repair turn; those attempts count within
        max_attempts. Raises TeacherError when no attempt produced a valid value.
        """
        messages = await asyncio.to_thread(_build_messages, prompt)
        return await self._run(messages, validate)

    def _wait(self, state: RetryCallState) -> float:
        """How long to sleep before the next attempt: none after an invalid reply (the server is fine), the
        server's Retry-After when it gave one, else capped exponential backoff with jitter."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _InvalidReply):
            return 0.0
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_backoff_s)
        return self._backoff(state)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "teacher %s: attempt %d/%d failed (%s); retrying in %.2fs",
            self.model,
            state.attempt_number,
            self.max_attempts,
            exc,
            state.upcoming_sleep,
        )

    async def _run(self, messages: list[dict[str, Any]], validate: Callable[[Any], T] | None) -> Any:
        """Send the conversation until it yields a value, extending it with repair turns after invalid replies."""
        messages = list(messages)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if attempts > 1:
                        self.usage.retries += 1
                    content = await self._request(messages)
                    if validate is None:
                        return content
                    return self._validated(content, validate, messages)
        except _Retryable as e:
            self.usage.failures += 1
            what = "no valid JSON reply" if isinstance(e, _InvalidReply) else "request failed"
            raise TeacherError(
                f"teacher {self.model} at {self.base_url}: {what} after {attempts} attempt(s); last error: {e}",
                status=e.status,
                attempts=attempts,
            ) from e
        except TeacherError as e:
            self.usage.failures += 1
            e.attempts = attempts
            raise
        raise AssertionError("unreachable: tenacity either returns a value or re-raises")  # pragma: no cover

    def _validated(self, content: str, validate: Callable[[Any], T], messages: list[dict[str, Any]]) -> T:
        """Parse and validate a reply; on failure append the repair turn to `messages` and raise _InvalidReply."""
        parsed = False
        try:
            value = extract_json(content)
            parsed = True
            return validate(value)
        except _VALIDATION_ERRORS as e:
            self.usage.invalid_json += 1
            messages.append({"role": "assistant", "content": content})
            messages.append({"role": "user", "content": _repair_message(e, parsed)})
            stage = "validation" if parsed else "JSON parsing"
            raise _InvalidReply(f"{stage} failed: {type(e).__name__}: {e}"[:_QUOTE_CHARS]) from e

    async def _request(self, messages: list[dict[str, Any]]) -> str:
        """One POST to /chat/completions: the reply text, with usage counted, or a classified error."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        url = f"{self.base_url}/chat/completions"
        async with self._semaphore:
            self.usage.requests += 1
            try:
                # httpx's timeout bounds each read; this bounds the whole exchange, so a server that trickles
                # bytes cannot hold a slot forever.
                async with asyncio.timeout(self.timeout_s):
                    response = await self._client.post(url, json=body)
            except (TimeoutError, httpx.TimeoutException) as e:
                raise _Retryable(f"no reply within {self.timeout_s}s ({type(e).__name__})") from e
            except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
                raise _Retryable(f"connection error: {type(e).__name__}: {e}") from e
        status = response.status_code
        if status != 200:
            message = _server_message(response)
            if status in _RETRY_4XX or status >= 500:
                retry_after = None
                if status in _RETRY_AFTER_STATUSES:
                    retry_after = _parse_retry_after(response.headers.get("retry-after"))
                raise _Retryable(f"HTTP {status}: {message}", status=status, retry_after=retry_after)
            raise TeacherError(
                f"teacher {self.model} at {self.base_url}: HTTP {status} (not retried): {message}",
                status=status,
                attempts=1,
            )
        return self._read_completion(response)

    def _read_completion(self, response: httpx.Response) -> str:
        """The first choice's text from a 200 reply, counting its tokens and cost.

        A 200 whose body is not a chat completion (a proxy's HTML page, a truncated body) is treated as a
        transient fault and retried.
        """
        try:
            data = response.json()
        except ValueError as e:
            raise _Retryable(f"HTTP 200 with a body that is not JSON: {response.text[:200]!r}", status=200) from e
        usage = data.get("usage") if isinstance(data, dict) else None
        if isinstance(usage, dict):
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            self.usage.cost_usd += (
                prompt_tokens / 1e6 * self.price_prompt_per_mtok
                + completion_tokens / 1e6 * self.price_completion_per_mtok
            )
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise _Retryable(f"HTTP 200 without choices[0].message.content: {str(data)[:200]}", status=200) from e
        if not isinstance(content, str):
            raise _Retryable(f"HTTP 200 with non-text content: {str(content)[:200]}", status=200)
        return content
