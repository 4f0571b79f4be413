"""The engine call: prompt token ids through the checkpoint's chat format, the context budget, and the
generation stream with its metrics."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from videoqa.model.chat import ChatFormat, Turn
from videoqa.model.engine import GenerationChunk, GenerationRequest, VideoQAEngine
from videoqa.model.layout import num_video_tokens
from videoqa.service.errors import APIError
from videoqa.service.frames import Frames
from videoqa.service.metrics import Metrics
from videoqa.service.protocol import GenerationFields, Usage
from videoqa.service.requests import note
from videoqa.service.tracing import NO_TRACING, NoTracing, Tracing


@dataclass
class Answer:
    text: str
    finish_reason: str | None
    usage: Usage
    frames: Frames | None
    prompt_token_ids: list[int] | None = None
    """The prompt as the engine saw it (placeholders expanded)."""
    logprobs: list[dict[str, Any]] | None = None
    """OpenAI logprobs.content entries of the whole answer, when asked for."""
    last: GenerationChunk | None = None
    """The generation's final chunk (token counts)."""


def generation_request(
    prompt: list[int], frames: Frames | None, fields: GenerationFields, max_tokens: int | None = None
) -> GenerationRequest:
    """An engine request from the REST API's generation fields (chat builds its own: OpenAI's fields differ)."""
    return GenerationRequest(
        prompt=prompt,
        frames=frames.frames if frames else None,
        max_tokens=max_tokens or fields.max_tokens,
        temperature=fields.temperature,
        top_p=fields.top_p,
        top_k=fields.top_k,
        presence_penalty=fields.presence_penalty,
        frequency_penalty=fields.frequency_penalty,
        seed=fields.seed,
        stop=list(fields.stop),
    )


class Generation:
    def __init__(
        self,
        engine: VideoQAEngine,
        metrics: Metrics,
        chat_format: ChatFormat | None = None,
        tracing: Tracing | NoTracing = NO_TRACING,
    ) -> None:
        self.engine, self.metrics, self.tracing = engine, metrics, tracing
        self.chat_format = chat_format
        """Set once the tokenizer is known (split mode without a local checkpoint: after the engine started)."""

    @property
    def chat(self) -> ChatFormat:
        if self.chat_format is None:  # admission refuses before the engine (and so the tokenizer) is ready
            raise APIError(503, "the engine is still loading; retry shortly", "engine_not_ready")
        return self.chat_format

    def prompt_ids(self, turns: list[Turn]) -> list[int]:
        return self.chat.prompt_ids(turns)

    def room(self, prompt_ids: list[int], visual: int) -> int:
        """Tokens left for the answer in the context after this prompt (OpenAI's default max_tokens)."""
        text = len(prompt_ids) - prompt_ids.count(self.chat.video_token_id)
        return max(self.engine.max_model_len - text - visual, 1)

    def check_budget(self, num_frames: int, prompt_ids: list[int], max_tokens: int) -> int:
        """Refuse, before any decoding or engine work, a request whose tokens cannot fit the context; returns the
        visual tokens the frames make."""
        cfg = self.engine.config
        visual = num_video_tokens(cfg.layout, num_frames, cfg.grid) if num_frames else 0
        text = len(prompt_ids) - prompt_ids.count(self.chat.video_token_id)
        total = visual + text + max_tokens
        if total > self.engine.max_model_len:
            fit = self.engine.max_model_len - text - max_tokens
            fix = (
                f"Ask for fewer frames (visual budget left: {max(fit, 0)} tokens) or a smaller max_tokens."
                if num_frames
                else "Shorten the messages or ask for a smaller max_tokens."
            )
            raise APIError(
                400,
                f"{num_frames} frames make {visual} visual tokens; with {text} prompt tokens and max_tokens "
                f"{max_tokens} that is {total} tokens, over the model's context of {self.engine.max_model_len}. " + fix,
                "context_length_exceeded",
                "num_frames" if num_frames else "messages",
            )
        if num_frames:
            self.metrics.frames.observe(num_frames)
            self.metrics.visual_tokens.observe(visual)
            note(frames=num_frames, visual_tokens=visual)
        return visual

    async def stream(
        self, req: GenerationRequest, visual_tokens: int | None = None
    ) -> AsyncGenerator[GenerationChunk, None]:
        """The engine's chunks for `req`, with the metrics (and the span: `visual_tokens` is one of its
        attributes)."""
        frames = None if req.frames is None else len(req.frames)
        # Current while the engine is called, so split mode's HTTP call to the engine is its child. Only the task
        # iterating this generator sees it, and it ends in that task too (callers close it with aclosing).
        with self.tracing.span(
            "videoqa.generate", engine_request_id=req.request_id, frames=frames, visual_tokens=visual_tokens
        ) as span:
            start = time.perf_counter()
            first_at: float | None = None
            last: GenerationChunk | None = None
            try:
                # aclosing: a consumer that stops early (client gone) closes the engine stream NOW, which aborts the
                # request in the engine; left to garbage collection, the abort could come much later.
                async with contextlib.aclosing(self.engine.generate(req)) as chunks:
                    async for chunk in chunks:
                        if first_at is None:
                            first_at = time.perf_counter()
                            self.metrics.ttft.observe(first_at - start)
                            note(prefill_seconds=round(first_at - start, 4))
                            span.set(time_to_first_token_s=round(first_at - start, 6))
                        last = chunk
                        yield chunk
            finally:
                if last is not None:
                    span.set(
                        prompt_tokens=last.prompt_tokens,
                        completion_tokens=last.completion_tokens,
                        cached_tokens=last.cached_tokens,
                        finish_reason=last.finish_reason,
                    )
                    # Each engine request's (n choices: every one's), not only the first choice's that usage shows.
                    self.metrics.prefix_cache_hit_tokens.inc(last.cached_tokens)
                if last is not None and first_at is not None:
                    self.metrics.generated.inc(last.completion_tokens)
                    elapsed = time.perf_counter() - first_at
                    if last.completion_tokens > 1 and elapsed > 0:
                        self.metrics.tokens_per_s.observe((last.completion_tokens - 1) / elapsed)

    async def complete(self, req: GenerationRequest, frames: Frames | None, visual: int) -> Answer:
        """The whole answer of one engine request."""
        last: GenerationChunk | None = None
        prompt_ids: list[int] | None = None
        logprobs: list[dict[str, Any]] | None = [] if req.logprobs is not None else None
        async with contextlib.aclosing(self.stream(req, visual)) as chunks:
            async for chunk in chunks:
                last = chunk
                prompt_ids = prompt_ids or chunk.prompt_token_ids
                if logprobs is not None:
                    logprobs.extend(chunk.logprobs or [])
        assert last is not None
        return Answer(last.text, last.finish_reason, Usage.of(last, visual), frames, prompt_ids, logprobs, last)
