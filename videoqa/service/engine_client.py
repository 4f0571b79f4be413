"""The split-mode engine client: the VideoQAEngine protocol over HTTP to one or more `videoqa engine`s.

Several engines (VIDEOQA_ENGINE_URL=http://a:8000,http://b:8000) serve one gateway: each request goes to the
healthy engine with the fewest requests outstanding from this gateway (least outstanding requests, as Envoy's
LEAST_REQUEST and the Gateway API inference extension route), and a health check every `health_interval_s` takes
an engine out while it is gone and back when it answers again. An engine that refuses the connection is also taken
out at once and the request tried on the next one (nothing reached the engine, so nothing runs twice). With no
engine to take a request, the gateway answers 503 with Retry-After (EngineUnavailableError), never 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import tempfile
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from videoqa.model.engine import GenerationChunk, GenerationRequest
from videoqa.model.layout import VideoLayout
from videoqa.service.engine_server import encode_request
from videoqa.service.errors import APIError

log = logging.getLogger(__name__)


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

    def to_dict(self) -> dict[str, Any]:
        """The config.json fields this reads (from_dict(to_dict()) round-trips)."""
        return {
            "video_layout": self.video_layout,
            "vision_config": {"image_size": self.image_size, "patch_size": self.patch_size},
            "max_frames": self.max_frames,
            "num_frames": self.num_frames,
        }

    @property
    def layout(self) -> VideoLayout:
        return VideoLayout.from_dict(self.video_layout)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


class EngineUnavailableError(APIError):
    """No engine can take the request now (all down, or the one tried went away): 503 + Retry-After, so clients
    and the job worker retry rather than give up."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        retry = max(math.ceil(retry_after_s), 1)
        message = f"{message}; retry in {retry} s"
        super().__init__(503, message, "engine_unavailable", headers={"Retry-After": str(retry)})


def engine_urls(spec: str | Sequence[str]) -> list[str]:
    """`http://a,http://b` (VIDEOQA_ENGINE_URL) or a list -> the distinct URLs, in order, without trailing /."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    urls = list(dict.fromkeys(u.strip().rstrip("/") for u in parts if u.strip()))
    if not urls:
        raise ValueError("no engine URL given (VIDEOQA_ENGINE_URL takes one URL or several, comma-separated)")
    return urls


class _Backend:
    """One engine: its client, whether it answered its last health check, and requests outstanding here."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.client = httpx.AsyncClient(base_url=url, headers=headers, timeout=httpx.Timeout(600.0, connect=5.0))
        self.healthy = False
        self.outstanding = 0
        self.info: dict[str, Any] | None = None
        self.mismatch: str | None = None
        """Why this engine is never used: it serves another model than the first engine that answered."""

    @property
    def usable(self) -> bool:
        return self.healthy and self.info is not None and self.mismatch is None


class RemoteEngine:
    def __init__(
        self,
        url: str | Sequence[str],
        start_timeout_s: float = 600.0,
        token: str = "",
        health_interval_s: float = 1.0,
    ) -> None:
        self.urls = engine_urls(url)
        self.url = self.urls[0]
        self.start_timeout_s = start_timeout_s
        self.health_interval_s = health_interval_s
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._backends = [_Backend(u, headers) for u in self.urls]
        self._watcher: asyncio.Task[None] | None = None
        self._placed: dict[str, _Backend] = {}
        """request id -> the engine running it (aborts go there)."""
        self.model_name = "unknown"
        self.max_model_len = 0
        self._config: RemoteConfig | None = None

    @property
    def config(self) -> RemoteConfig:
        """The served checkpoint's config, from the first engine up (so only after start())."""
        if self._config is None:
            raise RuntimeError("RemoteEngine.config is known only after start()")
        return self._config

    async def start(self) -> None:
        """Wait (up to start_timeout_s) until one engine is ready; the others join when their health checks pass."""
        deadline = asyncio.get_running_loop().time() + self.start_timeout_s
        while True:
            # Asked together, decided in the order listed: the first listed engine that is up sets the model.
            infos = await asyncio.gather(*(self._fetch_info(b) for b in self._backends))
            for backend, info in zip(self._backends, infos, strict=True):
                if info is not None:
                    self._join(backend, info)
            if any(b.info is not None for b in self._backends):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no engine of {', '.join(self.urls)} ready after {self.start_timeout_s:.0f} s")
            await asyncio.sleep(1.0)
        self._watcher = asyncio.create_task(self._watch())

    async def _fetch_info(self, backend: _Backend) -> dict[str, Any] | None:
        """The engine's /internal/info once it is ready; None while it is not (or not reachable)."""
        try:
            resp = await backend.client.get("/internal/info")
            if resp.status_code == 401:  # retrying will not help: say what to fix
                raise PermissionError(f"engine at {backend.url} refused the engine token (VIDEOQA_ENGINE_API_TOKEN)")
            info = resp.json()
        except (httpx.HTTPError, ValueError):
            return None
        return info if info.get("ready") else None

    def _join(self, backend: _Backend, info: dict[str, Any]) -> None:
        """Take an engine into rotation, unless it serves another model than the first one did."""
        served = (info["model_name"], int(info["max_model_len"]), RemoteConfig.from_dict(info["config"]))
        if self._config is None:  # the first engine up decides what this gateway serves
            self.model_name, self.max_model_len, self._config = served
        elif served != (self.model_name, self.max_model_len, self._config):
            backend.mismatch = f"it serves {served[0]!r} (context {served[1]}), not {self.model_name!r}"
            log.error("engine at %s is left out: %s", backend.url, backend.mismatch)
        backend.info = info
        backend.healthy = True

    async def _watch(self) -> None:
        """Follow every engine's health, so /readyz (and job claims) stop while all are gone, routing skips the
        ones that are down, and both resume when they answer again."""
        while True:
            await asyncio.sleep(self.health_interval_s)
            await asyncio.gather(*(self._check(b) for b in self._backends))

    async def _check(self, backend: _Backend) -> None:
        if backend.mismatch is not None:
            return
        if backend.info is None:  # not up yet at start (or refused then): learn what it serves first
            try:
                info = await self._fetch_info(backend)
            except PermissionError as err:
                backend.mismatch = str(err)
                log.error("engine at %s is left out: %s", backend.url, err)
                return
            if info is not None:
                self._join(backend, info)
            return
        try:
            resp = await backend.client.get("/internal/health", timeout=httpx.Timeout(5.0, connect=2.0))
            backend.healthy = resp.status_code == 200
        except httpx.ReadTimeout:
            pass  # connected but slow: busy (or paused), not gone; keep the last verdict
        except httpx.HTTPError:
            backend.healthy = False  # refused, unresolvable, unreachable: the engine is not there

    def _pick(self, tried: set[int]) -> _Backend | None:
        """The usable engine with the fewest outstanding requests (ties: the first listed)."""
        candidates = [b for i, b in enumerate(self._backends) if b.usable and i not in tried]
        return min(candidates, key=lambda b: b.outstanding, default=None)

    async def metrics_text(self) -> str:
        """The engines' vllm:* series, each sample labelled with its engine's URL when there are several; empty
        when no engine answers (the gateway's own still serve)."""
        if len(self._backends) == 1:
            return await self._metrics_of(self._backends[0])
        up = [b for b in self._backends if b.usable]
        texts = await asyncio.gather(*(self._metrics_of(b) for b in up))
        return _merge_labelled([(b.url, text) for b, text in zip(up, texts, strict=True) if text])

    @staticmethod
    async def _metrics_of(backend: _Backend) -> str:
        try:
            resp = await backend.client.get("/internal/metrics", timeout=5.0)
        except httpx.HTTPError:
            return ""
        return resp.text if resp.status_code == 200 else ""

    async def tokenizer(self) -> Any:
        """The engine's tokenizer, loaded from the files it serves (same chat template, same special tokens)."""
        from transformers import AutoTokenizer

        backend = self._pick(set()) or self._backends[0]
        resp = await backend.client.get("/internal/tokenizer")
        resp.raise_for_status()
        with tempfile.TemporaryDirectory(prefix="videoqa-tokenizer-") as tmp:
            for name, text in resp.json().items():
                (Path(tmp) / Path(name).name).write_text(text)
            return await asyncio.to_thread(AutoTokenizer.from_pretrained, tmp)

    async def stop(self) -> None:
        for backend in self._backends:
            backend.healthy = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for backend in self._backends:
            await backend.client.aclose()

    def ready(self) -> bool:
        return any(b.usable for b in self._backends)

    def queue_depth(self) -> int:
        return sum(b.outstanding for b in self._backends)

    async def abort(self, request_id: str) -> None:
        backend = self._placed.get(request_id)
        if backend is not None:
            with contextlib.suppress(httpx.HTTPError):
                await backend.client.post(f"/internal/abort/{request_id}")

    def _unavailable(self, why: str) -> EngineUnavailableError:
        return EngineUnavailableError(why, retry_after_s=self.health_interval_s + 1)

    async def generate(self, req: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        body = encode_request(req)
        tried: set[int] = set()
        while True:
            backend = self._pick(tried)
            if backend is None:
                raise self._unavailable("no engine is reachable")
            tried.add(self._backends.index(backend))
            backend.outstanding += 1
            self._placed[req.request_id] = backend
            started = False
            try:
                # Leaving this block early (client gone) closes the stream; the engine then aborts the request.
                async with backend.client.stream("POST", "/internal/generate", content=body) as resp:
                    if resp.status_code == 503:  # loading or shutting down: not this engine now
                        backend.healthy = False
                        continue
                    if resp.status_code != 200:
                        raise RuntimeError(f"engine answered HTTP {resp.status_code}: {(await resp.aread())[:300]!r}")
                    async for line in resp.aiter_lines():
                        if line:
                            started = True
                            yield GenerationChunk(**json.loads(line))
                return
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # Refused or unreachable: the request never reached it. Out until a health check passes; next.
                backend.healthy = False
                log.warning("engine at %s is unreachable; trying another", backend.url)
            except (httpx.ReadError, httpx.RemoteProtocolError) as err:
                # It went away mid-request: do not run the request again elsewhere (it may have side effects on
                # a stream already sent); the client (or job worker) retries.
                backend.healthy = False
                raise self._unavailable(f"the engine went away during the request ({type(err).__name__})") from err
            finally:
                backend.outstanding -= 1
                self._placed.pop(req.request_id, None)
            assert not started


def _merge_labelled(texts: list[tuple[str, str]]) -> str:
    """Several engines' Prometheus expositions as one, each sample labelled engine=<url> (the same families from
    each engine would otherwise collide)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    merged: dict[str, Metric] = {}
    for url, text in texts:
        for family in text_string_to_metric_families(text):
            target = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                target.samples.append(sample._replace(labels={**sample.labels, "engine": url}))

    class _Collector:
        def collect(self) -> list[Metric]:
            return list(merged.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry).decode()
