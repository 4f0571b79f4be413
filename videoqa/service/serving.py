"""The serving core: turns a request into (decoded frames, prompt) and an engine generation.

Routers stay thin and call this; errors raised here (APIError, VideoError, FetchError) become HTTP responses in
errors.py. It composes typed collaborators, each in its own module: the file store with fetching
(filestore.py), the frame source with the decoded-frame cache (frames.py), admission (admission.py) and the
engine call with prompt building and the context budget (generation.py). Order of work for a question: admit
-> resolve the video (uploaded file id, URL, or upload) -> plan the frames and check the token budget with the
shared layout function -> frames from the cache or the decode pool -> prompt with the real timestamps -> engine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from videoqa.model.chat import ChatFormat, Turn, video_question_text
from videoqa.model.engine import VideoQAEngine
from videoqa.service.admission import Admission, Slot
from videoqa.service.errors import APIError
from videoqa.service.fetch import FetchOptions
from videoqa.service.filestore import FileStore
from videoqa.service.frames import Frames, FrameSource
from videoqa.service.generation import Answer, Generation, generation_request
from videoqa.service.metrics import Metrics
from videoqa.service.protocol import GenerationFields, SamplingFields, VideoSource
from videoqa.service.settings import Settings
from videoqa.service.state import State
from videoqa.service.tracing import NO_TRACING, NoTracing, Tracing
from videoqa.video import DecodePool

CAPTION_PROMPT = "Please describe this video in detail."

__all__ = ["CAPTION_PROMPT", "Answer", "Frames", "Prepared", "VideoInput", "VideoQAService", "cancel_on_disconnect"]


@dataclass(frozen=True)
class VideoInput:
    """The one visual input of a conversation and the turn it opens."""

    source: VideoSource
    turn: int
    image: bool = False
    """A still image (given to the model as a one-frame video, without the time instruction)."""


@dataclass
class Prepared:
    """A conversation ready for the engine."""

    prompt: list[int]
    frames: Frames | None
    visual_tokens: int


class VideoQAService:
    def __init__(
        self,
        settings: Settings,
        engine: VideoQAEngine,
        state: State,
        pool: DecodePool,
        metrics: Metrics,
        chat_format: ChatFormat | None = None,
        tracing: Tracing | NoTracing = NO_TRACING,
    ) -> None:
        self.settings, self.engine, self.state, self.metrics = settings, engine, state, metrics
        self.files = FileStore(
            settings.data_dir,
            state.files,
            pool,
            FetchOptions(
                max_bytes=settings.fetch_max_bytes,
                total_timeout_s=settings.fetch_timeout_s,
                allow_domains=list(settings.fetch_allow_domains),
                allow_cidrs=list(settings.fetch_allow_cidrs),
            ),
            tracing,
        )
        self.frames = FrameSource(settings, state.cache, pool, metrics, tracing)
        self.generation = Generation(engine, metrics, chat_format, tracing)
        self.admission = Admission(settings.max_inflight, settings.max_waiting, settings.max_wait_s, metrics)
        self.started_at = int(time.time())
        """When this gateway started: the `created` of the served model in /v1/models (stable across calls)."""

    def ready(self) -> bool:
        """The engine answers and the prompt format is known (split mode without `--model` loads the tokenizer from
        the engine after it is up): what /readyz reports, admission requires and job workers wait for."""
        return self.engine.ready() and self.generation.chat_format is not None

    async def admit(self) -> Slot:
        """Backpressure: an in-flight slot now or after a bounded wait in line, else 503 + Retry-After
        (admission.py). The caller releases the slot when the request (or its stream) ends."""
        if not self.ready():
            raise APIError(
                503, "the engine is still loading; retry shortly", "engine_not_ready", headers={"Retry-After": "5"}
            )
        depth = self.engine.queue_depth()
        self.metrics.queue_depth.set(depth)
        if depth >= self.settings.max_engine_queue:  # the engine's queue is shared by every gateway: no waiting
            raise self.admission.refuse("engine_queue_full", f"server busy ({depth} requests queued in the engine)")
        return await self.admission.acquire()

    async def prepare(
        self, turns: list[Turn], video: VideoInput | None, sampling: SamplingFields, max_tokens: int, *, tenant: str
    ) -> Prepared:
        """Prompt token ids for a conversation; the video (if any) opens its turn, followed by the time instruction
        with the real timestamps. `tenant`'s files only."""
        gen, turns = self.generation, list(turns)
        if video is None:
            ids = gen.prompt_ids(turns)
            gen.check_budget(0, ids, max_tokens)
            return Prepared(ids, None, 0)
        idx, cfg = video.turn, self.engine.config
        if video.image:
            assert video.source.video_url is not None
            turns[idx] = Turn("user", turns[idx].text, video=True)
            ids = gen.prompt_ids(turns)
            visual = gen.check_budget(1, ids, max_tokens)
            path, _ = await self.files.fetch(video.source.video_url)
            try:
                frames = await self.frames.image(path, cfg)
            finally:
                path.unlink(missing_ok=True)
            return Prepared(ids, frames, visual)
        path, meta = await self.files.resolve(video.source, tenant)
        spec = self.frames.spec(sampling, cfg)
        planned = self.frames.planned(meta, spec)
        question = turns[idx].text
        # Budget check first, with placeholder timestamps of the planned length.
        turns[idx] = Turn("user", video_question_text(question, meta["duration"], [0.0] * planned), video=True)
        visual = gen.check_budget(planned, gen.prompt_ids(turns), max_tokens)
        frames = await self.frames.video(path, meta, spec, tenant)
        turns[idx] = Turn("user", video_question_text(question, frames.duration, frames.timestamps), video=True)
        return Prepared(gen.prompt_ids(turns), frames, visual)

    async def ask(
        self, source: VideoSource, question: str, sampling: SamplingFields, fields: GenerationFields, *, tenant: str
    ) -> Answer:
        """One question about one video (REST QA, captions and jobs), with `tenant`'s files."""
        with await self.admit():
            video = VideoInput(source, turn=0)
            ready = await self.prepare([Turn("user", question)], video, sampling, fields.max_tokens, tenant=tenant)
            req = generation_request(ready.prompt, ready.frames, fields)
            return await self.generation.complete(req, ready.frames, ready.visual_tokens)


async def cancel_on_disconnect(request: Any, coro: Any) -> Any:
    """Run `coro`, cancelling it (and so aborting its engine request) if the client goes away."""
    task = asyncio.ensure_future(coro)
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if not done and await request.is_disconnected():
                task.cancel()
                raise APIError(499, "client disconnected", "client_disconnected")
    except asyncio.CancelledError:  # we are cancelled ourselves (shutdown): so is the work, or it would run on
        task.cancel()
        raise
    return task.result()
