"""OpenAI-compatible chat completions (text + video_url parts, SSE streaming) and the model list."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from videoqa.model.engine import GenerationRequest
from videoqa.model.prompt import SYSTEM_PROMPT
from videoqa.service.deps import get_service, rate_limit
from videoqa.service.errors import COMMON_ERRORS, APIError
from videoqa.service.protocol import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    Usage,
    VideoSource,
)
from videoqa.service.serving import Slot, VideoQAService, cancel_on_disconnect

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(rate_limit)], responses=COMMON_ERRORS)


def _flatten(body: ChatCompletionRequest) -> tuple[list[tuple[str, str]], str | None, VideoSource | None, int | None]:
    """Messages -> (role, text) turns, the system prompt, the one video, and the turn that carries it.

    A video_url part's url may be https://..., data:video/...;base64,..., or videoqa://files/<file id>.
    """
    turns: list[tuple[str, str]] = []
    system: str | None = None
    video: VideoSource | None = None
    video_turn: int | None = None
    for i, msg in enumerate(body.messages):
        parts = msg.content if isinstance(msg.content, list) else [{"type": "text", "text": msg.content or ""}]
        texts: list[str] = []
        for part in parts:
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == "video_url":
                url = (part.get("video_url") or {}).get("url") if isinstance(part.get("video_url"), dict) else None
                if not url:
                    raise APIError(
                        422, f"messages[{i}]: a video_url part needs video_url.url", "invalid_video_url", "messages"
                    )
                if video is not None:
                    raise APIError(422, "this model takes one video per conversation", "too_many_videos", "messages")
                if msg.role != "user":
                    raise APIError(422, "videos go in user messages", "invalid_video_url", "messages")
                video, video_turn = VideoSource(video_url=url), len(turns)
            else:
                raise APIError(
                    422,
                    f"messages[{i}]: unsupported content part type {kind!r}; use text or video_url",
                    "unsupported_content",
                    "messages",
                )
        text = "\n".join(texts)
        if msg.role == "system":
            system = text
        else:
            turns.append((msg.role, text))
    if not turns or turns[-1][0] != "user":
        raise APIError(422, "the last message must come from the user", "invalid_messages", "messages")
    return turns, system, video, video_turn


@router.post("/chat/completions", response_model=ChatCompletion, summary="OpenAI-compatible chat with video")
async def chat(body: ChatCompletionRequest, request: Request, service: VideoQAService = Depends(get_service)):
    if body.model and body.model != service.engine.model_name:
        raise APIError(
            404,
            f"model {body.model!r} is not served here; GET /v1/models lists {service.engine.model_name!r}",
            "model_not_found",
            "model",
        )
    turns, system, video, video_turn = _flatten(body)
    max_tokens = body.max_completion_tokens or body.max_tokens or 256
    slot = service.admit()  # held until the answer (or the whole stream) is done
    try:
        prompt, frames, visual = await service.prepare(
            video, body, turns, system or SYSTEM_PROMPT, max_tokens, video_turn
        )
        stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        req = GenerationRequest(
            prompt=prompt,
            frames=frames.frames if frames else None,
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=stop,
        )
        model = service.engine.model_name
        if not body.stream:
            with slot:
                answer = await cancel_on_disconnect(request, service.complete(req, frames, visual))
            return ChatCompletion(
                model=model,
                usage=answer.usage,
                choices=[
                    ChatChoice(message=ChatChoiceMessage(content=answer.text), finish_reason=answer.finish_reason)
                ],
            )
    except BaseException:
        slot.release()
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _sse(service, slot, req, model, visual, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    service: VideoQAService, slot: Slot, req: GenerationRequest, model: str, visual: int, include_usage: bool
) -> AsyncIterator[str]:
    with slot:
        async for event in _events(service, req, model, visual, include_usage):
            yield event


async def _events(
    service: VideoQAService, req: GenerationRequest, model: str, visual: int, include_usage: bool
) -> AsyncIterator[str]:
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict, finish: str | None, usage: dict | None = None, choices: bool = True) -> str:
        payload = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
        }
        if usage is not None:
            payload["usage"] = usage
        return f"data: {json.dumps(payload)}\n\n"

    yield event({"role": "assistant", "content": ""}, None)
    last = None
    # Closing this generator (client gone) closes the engine stream at once, which aborts the request in vLLM.
    async with contextlib.aclosing(service.stream(req)) as chunks:
        async for chunk in chunks:
            last = chunk
            if chunk.delta or chunk.finished:
                yield event(
                    {"content": chunk.delta} if chunk.delta else {}, chunk.finish_reason if chunk.finished else None
                )
    if include_usage and last is not None:
        usage = Usage.of(last, visual)
        yield event({}, None, usage.model_dump(), choices=False)
    yield "data: [DONE]\n\n"


@router.get("/models", response_model=ModelList, summary="Served models")
async def models(service: VideoQAService = Depends(get_service)) -> ModelList:
    cfg = service.engine.config
    return ModelList(
        data=[
            ModelCard(
                id=service.engine.model_name,
                created=int(time.time()),
                max_model_len=service.engine.max_model_len,
                max_frames=cfg.max_frames,
                video_layout=cfg.video_layout,
            )
        ]
    )
