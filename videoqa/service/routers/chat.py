"""OpenAI-compatible chat completions (text + video_url parts, SSE streaming) and the model list."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from videoqa.model.chat import Turn
from videoqa.model.engine import GenerationChunk, GenerationRequest
from videoqa.service.admission import Slot
from videoqa.service.deps import Caller, Service, rate_limit
from videoqa.service.errors import COMMON_ERRORS, APIError
from videoqa.service.protocol import (
    REFUSED_CHAT_FIELDS,
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ModelCard,
    ModelList,
    Usage,
    VideoSource,
)
from videoqa.service.requests import request_id
from videoqa.service.serving import Prepared, VideoInput, VideoQAService, cancel_on_disconnect

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(rate_limit)], responses=COMMON_ERRORS)


def _flatten(body: ChatCompletionRequest) -> tuple[list[Turn], VideoInput | None]:
    """Messages -> chat turns (text kept as plain text, whatever it contains), the one video, and the turn that
    carries it.

    A video_url part's url may be https://..., data:video/...;base64,..., or videoqa://files/<file id>.
    """
    turns: list[Turn] = []
    video: VideoInput | None = None
    for i, msg in enumerate(body.messages):
        parts: list[dict[str, Any]] = (
            msg.content if isinstance(msg.content, list) else [{"type": "text", "text": msg.content or ""}]
        )
        texts: list[str] = []
        for part in parts:
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind in ("video_url", "image_url"):
                # An image is a one-frame video for LLaVA-Video; either way one visual input per conversation.
                url = (part.get(kind) or {}).get("url") if isinstance(part.get(kind), dict) else None
                if not url:
                    raise APIError(400, f"messages[{i}]: a {kind} part needs {kind}.url", f"invalid_{kind}", "messages")
                if video is not None:
                    raise APIError(400, "this model takes one video per conversation", "too_many_videos", "messages")
                if msg.role != "user":
                    raise APIError(400, "videos go in user messages", "invalid_video_url", "messages")
                video = VideoInput(VideoSource(video_url=url), len(turns), image=kind == "image_url")
            else:
                raise APIError(
                    400,
                    f"messages[{i}]: unsupported content part type {kind!r}; use text, video_url or image_url",
                    "unsupported_content",
                    "messages",
                )
        turns.append(Turn(msg.role, "\n".join(texts)))
    if turns[-1].role != "user":
        raise APIError(400, "the last message must come from the user", "invalid_messages", "messages")
    return turns, video


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    """400 naming each OpenAI field the model cannot honour (never silently dropped)."""
    for name, why in REFUSED_CHAT_FIELDS.items():
        if getattr(body, name) is not None:
            raise APIError(400, f"{name} is not supported: {why}", "unsupported_parameter", name)
    if body.store:
        raise APIError(
            400, "store is not supported: this server does not store completions", "unsupported_parameter", "store"
        )
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", "invalid_request", "top_logprobs")


def _generation(body: ChatCompletionRequest, ready: Prepared, max_tokens: int) -> GenerationRequest:
    fmt = body.response_format
    return GenerationRequest(
        prompt=ready.prompt,
        frames=ready.frames.frames if ready.frames else None,
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        stop=[body.stop] if isinstance(body.stop, str) else (body.stop or []),
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        json_object=fmt is not None and fmt.type == "json_object",
        json_schema=fmt.json_schema.json_schema if fmt is not None and fmt.json_schema is not None else None,
    )


def _choices(body: ChatCompletionRequest, base: GenerationRequest) -> list[GenerationRequest]:
    """n choices as n engine requests on the same prompt (the prefix cache shares its work); with a seed,
    choice i samples with seed + i so the choices differ and stay reproducible."""
    if body.n == 1:
        return [base]
    return [
        dataclasses.replace(
            base, request_id=f"{base.request_id}-{i}", seed=None if base.seed is None else base.seed + i
        )
        for i in range(body.n)
    ]


@router.post("/chat/completions", response_model=ChatCompletion, summary="OpenAI-compatible chat with video")
async def chat(
    body: ChatCompletionRequest,
    request: Request,
    service: Service,
    caller: Caller,
) -> ChatCompletion | StreamingResponse:
    if body.model and body.model != service.engine.model_name:
        raise APIError(
            404,
            f"model {body.model!r} is not served here; GET /v1/models lists {service.engine.model_name!r}",
            "model_not_found",
            "model",
        )
    _refuse_unsupported(body)
    turns, video = _flatten(body)
    asked = body.max_completion_tokens or body.max_tokens
    # Held until the answers (or the whole stream) are done; a client that leaves while waiting leaves the line.
    slot = await cancel_on_disconnect(request, service.admit())
    try:
        ready = await service.prepare(turns, video, body.sampling_fields(), asked or 1, tenant=caller.tenant)
        frames, visual = ready.frames, ready.visual_tokens
        # OpenAI's default: no cap below the context, so the answer may use all the room the prompt leaves.
        max_tokens = asked or service.generation.room(ready.prompt, visual)
        reqs = _choices(body, _generation(body, ready, max_tokens))
        model = service.engine.model_name
        if not body.stream:
            with slot:
                answers = await cancel_on_disconnect(
                    request, asyncio.gather(*(service.generation.complete(r, frames, visual) for r in reqs))
                )
            first = answers[0]
            return ChatCompletion(
                model=model,
                usage=Usage.of(first.last, visual, sum(a.usage.completion_tokens for a in answers)),
                prompt_token_ids=first.prompt_token_ids if body.return_token_ids else None,
                choices=[
                    ChatChoice(
                        index=i,
                        message=ChatChoiceMessage(content=a.text),
                        finish_reason=a.finish_reason,
                        logprobs=ChoiceLogprobs(content=a.logprobs) if body.logprobs else None,
                    )
                    for i, a in enumerate(answers)
                ],
            )
    except BaseException:
        slot.release()
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _sse(service, slot, reqs, model, visual, include_usage, bool(body.return_token_ids), request_id(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    service: VideoQAService,
    slot: Slot,
    reqs: list[GenerationRequest],
    model: str,
    visual: int,
    include_usage: bool,
    return_token_ids: bool,
    rid: str,
) -> AsyncIterator[str]:
    with slot:
        async for event in _events(service, reqs, model, visual, include_usage, return_token_ids, rid):
            yield event


async def _merged(
    service: VideoQAService, reqs: list[GenerationRequest], visual: int
) -> AsyncGenerator[tuple[int, GenerationChunk], None]:
    """The chunks of n concurrent generations, tagged with their choice index, as they come."""
    if len(reqs) == 1:
        async with contextlib.aclosing(service.generation.stream(reqs[0], visual)) as chunks:
            async for chunk in chunks:
                yield 0, chunk
        return
    queue: asyncio.Queue[tuple[int, GenerationChunk | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, req: GenerationRequest) -> None:
        try:
            async with contextlib.aclosing(service.generation.stream(req, visual)) as chunks:
                async for chunk in chunks:
                    await queue.put((i, chunk))
            await queue.put((i, None))
        except Exception as err:
            await queue.put((i, err))

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(reqs)]
    try:
        running = len(tasks)
        while running:
            i, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:  # client gone or a failure: cancelling the pumps aborts their engine requests
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _events(
    service: VideoQAService,
    reqs: list[GenerationRequest],
    model: str,
    visual: int,
    include_usage: bool,
    return_token_ids: bool,
    rid: str,
) -> AsyncIterator[str]:
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    want_logprobs = reqs[0].logprobs is not None

    def event(
        choices: list[dict[str, Any]], usage: dict[str, Any] | None = None, extra: dict[str, object] | None = None
    ) -> str:
        payload: dict[str, object] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if usage is not None:
            payload["usage"] = usage
        return f"data: {json.dumps(payload | (extra or {}))}\n\n"

    def choice(
        i: int, delta: dict[str, Any], finish: str | None, logprobs: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        out: dict[str, object] = {"index": i, "delta": delta, "finish_reason": finish}
        if want_logprobs:
            out["logprobs"] = {"content": logprobs or [], "refusal": None}
        return out

    last: dict[int, GenerationChunk] = {}
    try:
        # Closing this generator (client gone) closes the engine streams at once, which aborts them in vLLM.
        async with contextlib.aclosing(_merged(service, reqs, visual)) as chunks:
            async for i, chunk in chunks:
                if i not in last:  # the role chunk, with the prompt ids on request (as vLLM's first chunk)
                    ids: dict[str, object] = (
                        {"prompt_token_ids": chunk.prompt_token_ids} if return_token_ids and not last else {}
                    )
                    yield event([choice(i, {"role": "assistant", "content": ""}, None)], extra=ids)
                last[i] = chunk
                if chunk.delta or chunk.finished:
                    delta = {"content": chunk.delta} if chunk.delta else {}
                    finish = chunk.finish_reason if chunk.finished else None
                    yield event([choice(i, delta, finish, chunk.logprobs)])
    except Exception as err:  # the engine failed mid-stream: say so in the stream before closing it
        log.exception("stream failed")
        error = {"message": f"the generation failed: {err}", "type": "server_error", "param": None}
        yield f"data: {json.dumps({'error': error | {'code': 'engine_error', 'request_id': rid}})}\n\n"
        yield "data: [DONE]\n\n"
        return
    if include_usage and last:
        first = last[min(last)]
        usage = Usage.of(first, visual, sum(c.completion_tokens for c in last.values()))
        yield event([], usage.model_dump())
    yield "data: [DONE]\n\n"


@router.get("/models", response_model=ModelList, summary="Served models")
async def models(service: Service) -> ModelList:
    cfg = service.engine.config
    return ModelList(
        data=[
            ModelCard(
                id=service.engine.model_name,
                created=service.started_at,
                max_model_len=service.engine.max_model_len,
                max_frames=cfg.max_frames,
                video_layout=cfg.layout.to_dict(),
            )
        ]
    )
