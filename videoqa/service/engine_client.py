"""The split-mode engine client: the VideoQAEngine protocol over HTTP to one or more `videoqa engine`s.

Several engines (VIDEOQA_ENGINE_URL=http://a:8000,http://b:8000) serve one gateway: each request goes to the
healthy engine with the fewest requests outstanding (least outstanding requests, as Envoy's LEAST_REQUEST and the
Gateway API inference extension route). The counts are the gateway's shared state's `engines` concern: with Redis,
every gateway's requests count (a pick and its count are one Lua script, so gateways bursting together spread
their requests); in-process, this gateway's own; while Redis is down, this gateway's own too. A health check
every `health_interval_s` takes an engine out while it is gone and back when it answers again, and reports this
gateway's counts (its heartbeat in the shared counts). An engine that refuses the connection is also taken
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
from pathlib import Path
from typing import Any

import httpx

from videoqa.model.engine import GenerationChunk, GenerationRequest
from videoqa.service.engine_server import RemoteConfig, encode_request
from videoqa.service.errors import APIError
from videoqa.service.metrics import merge_labelled
from videoqa.service.state import EngineLoad, StateUnavailableError
from videoqa.service.state.memory import MemoryEngineLoad

log = logging.getLogger(__name__)


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
        load: EngineLoad | None = None,
    ) -> None:
        self.urls = engine_urls(url)
        self.load: EngineLoad = load or MemoryEngineLoad()
        """Requests outstanding per engine across the gateways sharing it (the app sets its state's)."""
        self._reports: set[asyncio.Task[None]] = set()
        self._counting = asyncio.Lock()
        """Held while this gateway's counts are read and written to `load` (a pick and its local count, a report):
        a report whose snapshot predates a pick must not reach Redis after it, or it would erase that request."""
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
            await self._report()

    def _own(self) -> dict[str, int]:
        return {b.url: b.outstanding for b in self._backends}

    async def _report(self) -> None:
        async with self._counting:
            with contextlib.suppress(StateUnavailableError):  # Redis down: the next report catches up
                await self.load.report(self._own())

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

    def _candidates(self, tried: set[int]) -> list[_Backend]:
        return [b for i, b in enumerate(self._backends) if b.usable and i not in tried]

    def _pick(self, tried: set[int]) -> _Backend | None:
        """The usable engine with the fewest outstanding requests from this gateway (ties: the first listed)."""
        return min(self._candidates(tried), key=lambda b: b.outstanding, default=None)

    async def _acquire(self, tried: set[int]) -> _Backend | None:
        """The usable engine with the fewest requests outstanding over every gateway sharing the counts, counted
        at once; on this gateway's own counts while the shared state is unreachable."""
        async with self._counting:
            candidates = self._candidates(tried)
            if not candidates:
                return None
            backend = min(candidates, key=lambda b: b.outstanding)
            try:
                url, _ = await self.load.acquire([b.url for b in candidates], self._own())
                backend = next(b for b in candidates if b.url == url)
            except StateUnavailableError:
                pass
            backend.outstanding += 1
            return backend

    async def metrics_text(self) -> str:
        """The engines' vllm:* series, each sample labelled with its engine's URL when there are several; empty
        when no engine answers (the gateway's own still serve)."""
        if len(self._backends) == 1:
            return await self._metrics_of(self._backends[0])
        up = [b for b in self._backends if b.usable]
        texts = await asyncio.gather(*(self._metrics_of(b) for b in up))
        return merge_labelled([(b.url, text) for b, text in zip(up, texts, strict=True) if text])

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
        for task in [self._watcher, *self._reports]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
            backend = await self._acquire(tried)
            if backend is None:
                raise self._unavailable("no engine is reachable")
            tried.add(self._backends.index(backend))
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
                # Reported in the background: this runs while a cancelled request unwinds, and the other
                # gateways should see the engine free again now, not at the next health tick.
                report = asyncio.create_task(self._report())
                self._reports.add(report)
                report.add_done_callback(self._reports.discard)
            assert not started
