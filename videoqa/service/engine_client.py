"""The split-mode engine client: the VideoQAEngine protocol over HTTP to `videoqa engine`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from videoqa.model.engine import GenerationChunk, GenerationRequest
from videoqa.model.layout import VideoLayout
from videoqa.service.engine_server import encode_request


@dataclass(frozen=True)
class RemoteConfig:
    """The part of the engine's checkpoint config (config.json) a gateway reads, parsed without transformers'
    config classes (and so without torch): the split-mode gateway runs without torch and vLLM (the slim image)."""

    video_layout: dict[str, Any]
    image_size: int
    patch_size: int
    max_frames: int
    num_frames: int | None

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> RemoteConfig:
        vision = config.get("vision_config") or {}
        return cls(
            video_layout=config.get("video_layout") or VideoLayout().to_dict(),
            image_size=int(vision["image_size"]),
            patch_size=int(vision["patch_size"]),
            max_frames=int(config.get("max_frames", 64)),
            num_frames=config.get("num_frames"),
        )

    @property
    def layout(self) -> VideoLayout:
        return VideoLayout.from_dict(self.video_layout)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


class RemoteEngine:
    def __init__(
        self, url: str, start_timeout_s: float = 600.0, token: str = "", health_interval_s: float = 1.0
    ) -> None:
        self.url = url.rstrip("/")
        self.start_timeout_s = start_timeout_s
        self.health_interval_s = health_interval_s
        self._watcher: asyncio.Task[None] | None = None
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(600.0, connect=5.0)
        )
        self._ready = False
        self._inflight = 0
        self.model_name = "unknown"
        self.max_model_len = 0
        self.config: RemoteConfig | None = None  # type: ignore[assignment]

    async def start(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.start_timeout_s
        while True:
            try:
                resp = await self._client.get("/internal/info")
                if resp.status_code == 401:  # retrying will not help: say what to fix
                    raise PermissionError(f"engine at {self.url} refused the engine token (VIDEOQA_ENGINE_API_TOKEN)")
                info = resp.json()
                if info.get("ready"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"engine at {self.url} not ready after {self.start_timeout_s:.0f} s")
            await asyncio.sleep(1.0)
        self.model_name = info["model_name"]
        self.max_model_len = int(info["max_model_len"])
        self.config = RemoteConfig.from_dict(info["config"])
        self._ready = True
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Follow the engine's health, so /readyz (and job claims) stop while it is gone and resume after."""
        while True:
            await asyncio.sleep(self.health_interval_s)
            try:
                resp = await self._client.get("/internal/health", timeout=httpx.Timeout(5.0, connect=2.0))
                self._ready = resp.status_code == 200
            except httpx.ReadTimeout:
                pass  # connected but slow: busy (or paused), not gone; keep the last verdict
            except httpx.HTTPError:
                self._ready = False  # refused, unresolvable, unreachable: the engine is not there

    async def metrics_text(self) -> str:
        """The engine's vllm:* series; empty when the engine does not answer (the gateway's own still serve)."""
        try:
            resp = await self._client.get("/internal/metrics", timeout=5.0)
        except httpx.HTTPError:
            return ""
        return resp.text if resp.status_code == 200 else ""

    async def tokenizer(self) -> Any:
        """The engine's tokenizer, loaded from the files it serves (same chat template, same special tokens)."""
        from transformers import AutoTokenizer

        resp = await self._client.get("/internal/tokenizer")
        resp.raise_for_status()
        with tempfile.TemporaryDirectory(prefix="videoqa-tokenizer-") as tmp:
            for name, text in resp.json().items():
                (Path(tmp) / Path(name).name).write_text(text)
            return await asyncio.to_thread(AutoTokenizer.from_pretrained, tmp)

    async def stop(self) -> None:
        self._ready = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._client.aclose()

    def ready(self) -> bool:
        return self._ready

    def queue_depth(self) -> int:
        return self._inflight

    async def abort(self, request_id: str) -> None:
        await self._client.post(f"/internal/abort/{request_id}")

    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self._inflight += 1
        try:
            # Leaving this block early (client gone) closes the stream; the engine then aborts the request.
            async with self._client.stream("POST", "/internal/generate", content=encode_request(req)) as resp:
                if resp.status_code != 200:
                    raise RuntimeError(f"engine answered HTTP {resp.status_code}: {(await resp.aread())[:300]!r}")
                async for line in resp.aiter_lines():
                    if line:
                        yield GenerationChunk(**json.loads(line))
        finally:
            self._inflight -= 1
