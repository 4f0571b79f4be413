"""The file store: uploaded and fetched videos on disk under their content hash, registered per tenant.

Bytes are shared by every tenant that sends the same content; the registry entry (state) is per tenant, so
another tenant's id answers 404 like an unknown one (docs/service.md, Tenants).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from videoqa.service.errors import APIError
from videoqa.service.fetch import FetchOptions, fetch_to_file
from videoqa.service.protocol import FileObject, VideoSource
from videoqa.service.requests import note
from videoqa.service.state import FileRegistry, StateUnavailableError
from videoqa.service.tracing import NO_TRACING, NoTracing, Tracing
from videoqa.video import DecodePool


class Upload(Protocol):
    """What the store reads from an upload (Starlette's UploadFile)."""

    async def read(self, size: int = -1) -> bytes: ...


class FileStore:
    def __init__(
        self,
        data_dir: Path,
        registry: FileRegistry,
        pool: DecodePool,
        fetch: FetchOptions,
        tracing: Tracing | NoTracing = NO_TRACING,
    ) -> None:
        self.registry, self.pool, self.fetch_options, self.tracing = registry, pool, fetch, tracing
        self.files_dir = data_dir / "files"
        self.tmp_dir = data_dir / "tmp"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        if len(file_id) != 64 or any(c not in "0123456789abcdef" for c in file_id):
            raise APIError(
                404, f"no file with id {file_id!r} (ids are 64-character sha256 hex)", "file_not_found", "file_id"
            )
        return self.files_dir / f"{file_id}.video"

    async def register(self, tmp: Path, sha: str, tenant: str) -> FileObject:
        """Probe a downloaded/uploaded temp file, keep it under its content hash, and register it for `tenant`."""
        try:
            info = await self.pool.probe(tmp)
        except Exception:
            tmp.unlink(missing_ok=True)
            raise
        final = self.path(sha)
        os.replace(tmp, final)  # same content -> same name: re-uploads are idempotent
        meta = info.public() | {"id": sha, "created_at": int(time.time()), "keyframes": info.keyframes}
        await self.registry.put(sha, meta, tenant)
        return self.file_object(meta)

    @staticmethod
    def file_object(meta: dict[str, Any]) -> FileObject:
        return FileObject(**{k: meta[k] for k in FileObject.model_fields if k in meta})

    async def save_upload(self, upload: Upload, tenant: str) -> FileObject:
        """Stream an upload to disk while hashing it (the size cap is enforced by the body middleware)."""
        tmp = self.tmp_dir / uuid.uuid4().hex
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        return await self.register(tmp, digest.hexdigest(), tenant)

    async def get(self, file_id: str, tenant: str) -> dict[str, Any]:
        """The tenant's registry entry for `file_id`; another tenant's file is a 404 like an unknown one."""
        path = self.path(file_id)
        meta = await self.registry.get(file_id, tenant)
        if meta is None or not path.exists():
            raise APIError(
                404, f"no file with id {file_id!r}; upload it with POST /v1/files", "file_not_found", "file_id"
            )
        return meta

    async def delete(self, file_id: str, tenant: str) -> bool:
        path = self.path(file_id)
        if not await self.registry.delete(file_id, tenant):
            raise APIError(404, f"no file with id {file_id!r}", "file_not_found", "file_id")
        # The bytes go with the last tenant's entry: another tenant that uploaded the same content keeps it.
        if not await self.registry.in_use(file_id):
            path.unlink(missing_ok=True)
        return True

    async def fetch(self, url: str) -> tuple[Path, str]:
        """Download `url` (SSRF-safe, fetch.py) to a temp file: (its path, its sha256). The caller owns the file."""
        # Scheme and host only: a URL's path and query can carry credentials (signed URLs).
        parts = urlsplit(url) if not url.startswith("data:") else None
        with self.tracing.span(
            "videoqa.fetch", url_scheme=parts.scheme if parts else "data", url_host=parts.hostname if parts else None
        ) as span:
            start = time.perf_counter()
            result = await fetch_to_file(url, self.tmp_dir / uuid.uuid4().hex, self.fetch_options)
            note(fetch_seconds=round(time.perf_counter() - start, 4))  # for the request's access log line
            span.set(bytes=result.bytes, content_type=result.content_type)
        return result.path, result.sha256

    async def resolve(self, source: VideoSource, tenant: str) -> tuple[Path, dict[str, Any]]:
        """The video a request names: an uploaded file id, videoqa://files/<id>, or a URL fetched and kept."""
        if source.file_id is not None:
            return self.path(source.file_id), await self.get(source.file_id, tenant)
        assert source.video_url is not None
        url = source.video_url
        if url.startswith("videoqa://files/"):
            return await self.resolve(VideoSource(file_id=url.removeprefix("videoqa://files/")), tenant)
        tmp, sha = await self.fetch(url)
        try:
            existing = await self.registry.get(sha, tenant)
        except StateUnavailableError:  # Redis is down: the bytes are in hand, so register them (locally for now)
            existing = None
        if existing is not None and self.path(sha).exists():
            tmp.unlink(missing_ok=True)
            return self.path(sha), existing
        obj = await self.register(tmp, sha, tenant)
        return self.path(obj.id), await self.get(obj.id, tenant)
