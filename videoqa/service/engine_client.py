"""The split-mode engine client: the VideoQAEngine protocol over HTTP to `videoqa engine`."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from videoqa.model.config import LlavaVideoConfig
from videoqa.model.engine import GenerationChunk, GenerationRequest
from videoqa.service.engine_server import encode_request


class RemoteEngine:
    def __init__(self, url: str, start_timeout_s: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.start_timeout_s = start_timeout_s
        self._client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(600.0, connect=5.0))
        self._ready = False
        self._inflight = 0
        self.model_name = "unknown"
        self.max_model_len = 0
        self.config: LlavaVideoConfig | None = None  # type: ignore[assignment]

    async def start(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.start_timeout_s
        while True:
            try:
                info = (await self._client.get("/internal/info")).json()
                if info.get("ready"):
                    break
            except httpx.HTTPError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"engine at {self.url} not ready after {self.start_timeout_s:.0f} s")
            await asyncio.sleep(1.0)
        self.model_name = info["model_name"]
        self.max_model_len = int(info["max_model_len"])
        self.config = LlavaVideoConfig.from_dict(info["config"])
        self._ready = True

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
