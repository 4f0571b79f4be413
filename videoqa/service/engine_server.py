"""`videoqa engine`: the engine alone behind an internal HTTP API, for split deployments where gateways
(decoding, state, public API) scale apart from GPU engines.

GET /healthz (alive) and /readyz (engine loaded; 503 before) for probes; GET /internal/info.
POST /internal/generate  body = 4-byte header length + JSON header + .npy frames; answers NDJSON chunks.
A client that disconnects aborts its request in vLLM. Not for the public internet: put it on a private network,
and set a shared token (VIDEOQA_ENGINE_API_TOKEN, on the engine and its gateways): every /internal route but
/internal/health (probes call it, /healthz and /readyz; they tell only whether the engine is up) then needs
`Authorization: Bearer <token>` and answers 401 without it.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from videoqa.model.engine import TOKENIZER_FILES, GenerationRequest, LocalEngine
from videoqa.model.layout import VideoLayout
from videoqa.service import errors

log = logging.getLogger("videoqa.engine")


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


def encode_request(req: GenerationRequest) -> bytes:
    header = {k: v for k, v in asdict(req).items() if k != "frames"}
    header["has_frames"] = req.frames is not None
    blob = json.dumps(header).encode()
    buf = io.BytesIO()
    buf.write(len(blob).to_bytes(4, "big"))
    buf.write(blob)
    if req.frames is not None:
        np.save(buf, np.ascontiguousarray(req.frames, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def decode_request(body: bytes) -> GenerationRequest:
    n = int.from_bytes(body[:4], "big")
    header = json.loads(body[4 : 4 + n])
    frames = np.load(io.BytesIO(body[4 + n :]), allow_pickle=False) if header.pop("has_frames") else None
    return GenerationRequest(frames=frames, **header)


def create_engine_app(engine: LocalEngine, token: str = "") -> FastAPI:
    """The internal engine API; with a `token`, callers must send it as a bearer token (401 otherwise)."""

    async def authorize(request: Request) -> None:
        if not token:
            return
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        # Constant-time comparison: the token guards the GPUs.
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise errors.APIError(
                401,
                "missing or wrong engine token: send `Authorization: Bearer <VIDEOQA_ENGINE_API_TOKEN>`",
                "invalid_engine_token",
            )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="videoqa engine (internal)", lifespan=lifespan)
    errors.install(app)
    guarded = [Depends(authorize)]

    # The same probe paths as the gateway's, so a cluster probes every videoqa process alike: the server only
    # listens once the model is loaded (the lifespan awaits engine.start()), so a startup probe covers loading.
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return JSONResponse({"engine": engine.ready()}, status_code=200 if engine.ready() else 503)

    @app.get("/internal/health")
    async def health() -> JSONResponse:
        return JSONResponse({"ready": engine.ready()}, status_code=200 if engine.ready() else 503)

    @app.get("/internal/info", dependencies=guarded)
    async def info() -> dict[str, Any]:
        return {
            "model_name": engine.model_name,
            "max_model_len": engine.max_model_len,
            "config": engine.config.to_dict(),
            "queue_depth": engine.queue_depth(),
            "engine_unfinished": engine.engine_unfinished(),
            "ready": engine.ready(),
        }

    @app.get("/internal/metrics", dependencies=guarded)
    async def metrics() -> PlainTextResponse:
        """The engine's vllm:* Prometheus series; gateways append them to their own /metrics."""
        return PlainTextResponse(await engine.metrics_text())

    @app.get("/internal/tokenizer", dependencies=guarded)
    async def tokenizer() -> dict[str, str]:
        """The checkpoint's tokenizer files, so gateways render the same chat template without a local copy."""
        files = (engine.checkpoint / name for name in TOKENIZER_FILES)
        return {path.name: path.read_text() for path in files if path.is_file()}

    @app.post("/internal/generate", dependencies=guarded)
    async def generate(request: Request) -> StreamingResponse:
        req = decode_request(await request.body())

        async def lines() -> AsyncIterator[bytes]:
            async with contextlib.aclosing(engine.generate(req)) as chunks:  # disconnect -> abort in vLLM now
                async for chunk in chunks:
                    yield (json.dumps(asdict(chunk)) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post("/internal/abort/{request_id}", dependencies=guarded)
    async def abort(request_id: str) -> dict[str, Any]:
        await engine.abort(request_id)
        return {"aborted": request_id}

    return app
