"""The serving layer: turns API requests into (decoded frames, prompt) and engine generations.

Routers stay thin and call this; errors raised here (APIError, VideoError, FetchError) become HTTP responses
in errors.py. Order of work for a question: resolve the video (uploaded file id, URL, or upload) -> plan the
frames and check the token budget with the shared layout function -> frames from the cache or the decode
pool -> prompt with the real timestamps -> engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videoqa.model.chat import ChatFormat, Turn, video_question_text
from videoqa.model.engine import GenerationChunk, GenerationRequest, VideoQAEngine
from videoqa.model.layout import num_video_tokens
from videoqa.service.admission import Admission, Slot
from videoqa.service.errors import APIError
from videoqa.service.fetch import FetchOptions, fetch_to_file
from videoqa.service.metrics import Metrics
from videoqa.service.protocol import FileObject, SamplingFields, Usage, VideoSource
from videoqa.service.requests import note
from videoqa.service.settings import Settings
from videoqa.service.state import State
from videoqa.video import DecodePool, SamplingSpec, VideoInfo, target_times

log = logging.getLogger(__name__)

CAPTION_PROMPT = "Please describe this video in detail."


@dataclass
class Frames:
    frames: np.ndarray
    timestamps: list[float]
    duration: float
    cache_hit: bool


@dataclass
class Answer:
    text: str
    finish_reason: str | None
    usage: Usage
    frames: Frames | None
    prompt_token_ids: list[int] | None = None
    """The prompt as the engine saw it (placeholders expanded)."""
    logprobs: list[dict] | None = None
    """OpenAI logprobs.content entries of the whole answer, when asked for."""
    last: GenerationChunk | None = None
    """The generation's final chunk (token counts)."""


def _pack(frames: np.ndarray, timestamps: list[float], duration: float) -> bytes:
    header = json.dumps({"timestamps": timestamps, "duration": duration}).encode()
    buf = io.BytesIO()
    buf.write(len(header).to_bytes(4, "big"))
    buf.write(header)
    np.save(buf, frames, allow_pickle=False)
    return buf.getvalue()


def _unpack(blob: bytes) -> tuple[np.ndarray, list[float], float]:
    n = int.from_bytes(blob[:4], "big")
    meta = json.loads(blob[4 : 4 + n])
    frames = np.load(io.BytesIO(blob[4 + n :]), allow_pickle=False)
    return frames, meta["timestamps"], meta["duration"]


class VideoQAService:
    def __init__(
        self,
        settings: Settings,
        engine: VideoQAEngine,
        state: State,
        pool: DecodePool,
        metrics: Metrics,
        chat_format: ChatFormat | None = None,
    ) -> None:
        self.settings, self.engine, self.state, self.pool, self.metrics = settings, engine, state, pool, metrics
        self.chat_format = chat_format
        """Set once the tokenizer is known (split mode without a local checkpoint: after the engine started)."""
        self.files_dir = settings.data_dir / "files"
        self.tmp_dir = settings.data_dir / "tmp"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.admission = Admission(settings.max_inflight, settings.max_waiting, settings.max_wait_s, metrics)
        self.started_at = int(time.time())
        """When this gateway started: the `created` of the served model in /v1/models (stable across calls)."""

    # ---- files -------------------------------------------------------------------------------------
    def _file_path(self, file_id: str) -> Path:
        if len(file_id) != 64 or any(c not in "0123456789abcdef" for c in file_id):
            raise APIError(
                404, f"no file with id {file_id!r} (ids are 64-character sha256 hex)", "file_not_found", "file_id"
            )
        return self.files_dir / f"{file_id}.video"

    async def register(self, tmp: Path, sha: str, tenant: str) -> FileObject:
        """Probe a downloaded/uploaded temp file, keep it under its content hash, and register it for `tenant`
        (the bytes are shared by every tenant that sends the same content; the registry entry is not)."""
        try:
            info = await self.pool.probe(tmp)
        except Exception:
            tmp.unlink(missing_ok=True)
            raise
        final = self._file_path(sha)
        os.replace(tmp, final)  # same content -> same name: re-uploads are idempotent
        meta = info.public() | {"id": sha, "created_at": int(time.time()), "keyframes": info.keyframes}
        await self.state.file_put(sha, meta, tenant)
        return self.file_object(meta)

    @staticmethod
    def file_object(meta: dict[str, Any]) -> FileObject:
        return FileObject(**{k: meta[k] for k in FileObject.model_fields if k in meta})

    async def save_upload(self, upload: Any, tenant: str) -> FileObject:
        """Stream an UploadFile to disk while hashing it (the size cap is enforced by the body middleware)."""
        tmp = self.tmp_dir / uuid.uuid4().hex
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        return await self.register(tmp, digest.hexdigest(), tenant)

    async def get_file(self, file_id: str, tenant: str) -> dict[str, Any]:
        """The tenant's registry entry for `file_id`; another tenant's file is a 404 like an unknown one."""
        path = self._file_path(file_id)
        meta = await self.state.file_get(file_id, tenant)
        if meta is None or not path.exists():
            raise APIError(
                404, f"no file with id {file_id!r}; upload it with POST /v1/files", "file_not_found", "file_id"
            )
        return meta

    async def delete_file(self, file_id: str, tenant: str) -> bool:
        path = self._file_path(file_id)
        if not await self.state.file_delete(file_id, tenant):
            raise APIError(404, f"no file with id {file_id!r}", "file_not_found", "file_id")
        # The bytes go with the last tenant's entry: another tenant that uploaded the same content keeps it.
        if not await self.state.file_in_use(file_id):
            path.unlink(missing_ok=True)
        return True

    async def resolve(self, source: VideoSource, tenant: str) -> tuple[Path, dict[str, Any]]:
        if source.file_id is not None:
            meta = await self.get_file(source.file_id, tenant)
            return self._file_path(source.file_id), meta
        assert source.video_url is not None
        url = source.video_url
        if url.startswith("videoqa://files/"):
            return await self.resolve(VideoSource(file_id=url.removeprefix("videoqa://files/")), tenant)
        opts = FetchOptions(
            max_bytes=self.settings.fetch_max_bytes,
            total_timeout_s=self.settings.fetch_timeout_s,
            allow_domains=list(self.settings.fetch_allow_domains),
            allow_cidrs=list(self.settings.fetch_allow_cidrs),
        )
        result = await fetch_to_file(url, self.tmp_dir / uuid.uuid4().hex, opts)
        existing = await self.state.file_get(result.sha256, tenant)
        if existing is not None and self._file_path(result.sha256).exists():
            result.path.unlink(missing_ok=True)
            return self._file_path(result.sha256), existing
        obj = await self.register(result.path, result.sha256, tenant)
        return self._file_path(obj.id), await self.get_file(obj.id, tenant)

    # ---- frames ------------------------------------------------------------------------------------
    def spec(self, fields: SamplingFields) -> SamplingSpec:
        cfg = self.engine.config
        default_n = min(self.settings.default_num_frames or cfg.num_frames or cfg.max_frames, self.settings.max_frames)
        n = fields.num_frames or default_n
        cap = min(fields.max_frames or self.settings.max_frames, self.settings.max_frames)
        if fields.num_frames is not None and fields.fps is None and n > self.settings.max_frames:
            raise APIError(
                400,
                f"num_frames {n} is over this server's limit of {self.settings.max_frames}",
                "too_many_frames",
                "num_frames",
            )
        return SamplingSpec(
            num_frames=n,
            fps=fields.fps,
            max_frames=cap,
            policy=fields.policy or self.settings.default_policy,  # type: ignore[arg-type]
            size=(cfg.image_size, cfg.image_size),
        )

    def planned_frames(self, meta: dict[str, Any], spec: SamplingSpec) -> int:
        return len(target_times(self.video_info(meta), spec)[0])

    def room(self, prompt_ids: list[int], visual: int) -> int:
        """Tokens left for the answer in the context after this prompt (OpenAI's default max_tokens)."""
        text = len(prompt_ids) - prompt_ids.count(self.chat.video_token_id)
        return max(self.engine.max_model_len - text - visual, 1)

    @property
    def chat(self) -> ChatFormat:
        if self.chat_format is None:  # admit() refuses before the engine (and so the tokenizer) is ready
            raise APIError(503, "the engine is still loading; retry shortly", "engine_not_ready")
        return self.chat_format

    def check_budget(self, num_frames: int, prompt_ids: list[int], max_tokens: int) -> int:
        """Refuse, before any decoding or engine work, a request whose tokens cannot fit the context."""
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

    @staticmethod
    def video_info(meta: dict[str, Any]) -> VideoInfo:
        """The upload-time probe kept in the file registry (keyframe index included)."""
        return VideoInfo(**{k: meta[k] for k in VideoInfo.__dataclass_fields__ if k in meta})

    async def frames(
        self, path: Path, sha: str, spec: SamplingSpec, info: VideoInfo | None = None, tenant: str | None = None
    ) -> Frames:
        # Shared by default: the key is the content hash, and only a caller that holds those exact bytes (it
        # uploaded or fetched them) reaches it, so a hit hands out nothing it could not decode itself. Scope
        # "tenant" also hides the hit itself (docs/service.md).
        key = f"frames:{sha}:{spec.cache_key()}"
        if self.settings.frame_cache_scope == "tenant":
            key = f"frames:{tenant}:{sha}:{spec.cache_key()}"
        blob = await self.state.cache_get(key)
        if blob is not None:
            self.metrics.cache_hits.inc()
            frames, stamps, duration = _unpack(blob)
            return Frames(frames, stamps, duration, cache_hit=True)
        self.metrics.cache_misses.inc()
        start = time.perf_counter()
        got = await self.pool.sample(path, spec, info)  # no second packet pass: the upload probe has the index
        self.metrics.decode_seconds.observe(time.perf_counter() - start)
        self.metrics.frames_decoded.inc(got.timings.get("frames_decoded", 0.0))
        note(decode_seconds=round(time.perf_counter() - start, 4))
        packed = _pack(got.frames, got.timestamps, got.duration)
        if len(packed) <= self.settings.frame_cache_max_bytes:
            await self.state.cache_set(key, packed, self.settings.frame_cache_ttl_s)
        return Frames(got.frames, got.timestamps, got.duration, cache_hit=False)

    async def image_frames(self, url: str) -> Frames:
        """Fetch an image (https or data: URL, same fetch rules as videos) and decode it as one frame."""
        opts = FetchOptions(
            max_bytes=self.settings.fetch_max_bytes,
            total_timeout_s=self.settings.fetch_timeout_s,
            allow_domains=list(self.settings.fetch_allow_domains),
            allow_cidrs=list(self.settings.fetch_allow_cidrs),
        )
        result = await fetch_to_file(url, self.tmp_dir / uuid.uuid4().hex, opts)
        try:
            cfg = self.engine.config
            got = await self.pool.image(result.path, SamplingSpec(num_frames=1, size=(cfg.image_size, cfg.image_size)))
        finally:
            result.path.unlink(missing_ok=True)
        return Frames(got.frames, got.timestamps, got.duration, cache_hit=False)

    # ---- generation --------------------------------------------------------------------------------
    async def admit(self) -> Slot:
        """Backpressure: an in-flight slot now or after a bounded wait in line, else 503 + Retry-After
        (admission.py). The caller releases the slot when the request (or its stream) ends."""
        if not self.engine.ready() or self.chat_format is None:
            raise APIError(
                503, "the engine is still loading; retry shortly", "engine_not_ready", headers={"Retry-After": "5"}
            )
        depth = self.engine.queue_depth()
        self.metrics.queue_depth.set(depth)
        if depth >= self.settings.max_engine_queue:  # the engine's queue is shared by every gateway: no waiting
            raise self.admission.refuse("engine_queue_full", f"server busy ({depth} requests queued in the engine)")
        return await self.admission.acquire()

    async def stream(self, req: GenerationRequest) -> AsyncIterator[GenerationChunk]:
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
                    last = chunk
                    yield chunk
        finally:
            if last is not None and first_at is not None:
                self.metrics.generated.inc(last.completion_tokens)
                elapsed = time.perf_counter() - first_at
                if last.completion_tokens > 1 and elapsed > 0:
                    self.metrics.tokens_per_s.observe((last.completion_tokens - 1) / elapsed)

    async def prepare(
        self,
        source: VideoSource | None,
        sampling: SamplingFields,
        turns: list[Turn],
        max_tokens: int,
        video_turn: int | None = None,
        image: bool = False,
        *,
        tenant: str,
    ) -> tuple[list[int], Frames | None, int]:
        """Prompt token ids for a conversation; the video (if any) opens turn `video_turn` (default: the last),
        followed by the time instruction with the real timestamps. With `image` the source is a still image,
        given to the model as a one-frame video (no time instruction)."""
        turns = list(turns)
        idx = video_turn if video_turn is not None else len(turns) - 1
        if source is not None and image:
            assert source.video_url is not None
            turns[idx] = Turn("user", turns[idx].text, video=True)
            ids = self.chat.prompt_ids(turns)
            visual = self.check_budget(1, ids, max_tokens)
            frames = await self.image_frames(source.video_url)
            return ids, frames, visual
        if source is not None:
            path, meta = await self.resolve(source, tenant)
            spec = self.spec(sampling)
            planned = self.planned_frames(meta, spec)
            question = turns[idx].text
            # Budget check first, with placeholder timestamps of the planned length.
            turns[idx] = Turn("user", video_question_text(question, meta["duration"], [0.0] * planned), video=True)
            visual = self.check_budget(planned, self.chat.prompt_ids(turns), max_tokens)
            frames = await self.frames(path, meta["id"], spec, self.video_info(meta), tenant)
            turns[idx] = Turn("user", video_question_text(question, frames.duration, frames.timestamps), video=True)
            return self.chat.prompt_ids(turns), frames, visual
        ids = self.chat.prompt_ids(turns)
        self.check_budget(0, ids, max_tokens)
        return ids, None, 0

    async def complete(self, req: GenerationRequest, frames: Frames | None, visual: int) -> Answer:
        last: GenerationChunk | None = None
        prompt_ids: list[int] | None = None
        logprobs: list[dict] | None = [] if req.logprobs is not None else None
        async with contextlib.aclosing(self.stream(req)) as chunks:
            async for chunk in chunks:
                last = chunk
                prompt_ids = prompt_ids or chunk.prompt_token_ids
                if logprobs is not None:
                    logprobs.extend(chunk.logprobs or [])
        assert last is not None
        usage = Usage.of(last, visual)
        return Answer(last.text, last.finish_reason, usage, frames, prompt_ids, logprobs, last)

    async def ask(
        self, source: VideoSource, question: str, sampling: SamplingFields, gen: Any, *, tenant: str
    ) -> Answer:
        """One question about one video (REST QA, captions and jobs), with `tenant`'s files."""
        with await self.admit():
            prompt, frames, visual = await self.prepare(
                source, sampling, [Turn("user", question)], gen.max_tokens, tenant=tenant
            )
            req = GenerationRequest(
                prompt=prompt,
                frames=frames.frames if frames else None,
                max_tokens=gen.max_tokens,
                temperature=gen.temperature,
                top_p=gen.top_p,
                top_k=gen.top_k,
                presence_penalty=gen.presence_penalty,
                frequency_penalty=gen.frequency_penalty,
                seed=gen.seed,
                stop=list(gen.stop),
            )
            return await self.complete(req, frames, visual)


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
