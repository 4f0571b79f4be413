"""Optional OpenTelemetry tracing (videoqa/service/tracing.py), in the fast tier: a split-mode gateway in this process
(its engine is the real engine API over tests/utils/fake_engine.py on a loopback port), the real OTLP/HTTP exporter
sending to a stand-in collector on another loopback port, and videos fetched from a third. What the collector
receives is decoded with opentelemetry-proto and checked span by span."""

from __future__ import annotations

import gzip
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from typer.testing import CliRunner

import videoqa.service.engine_server as engine_server
import videoqa.service.tracing as tracing
from tests.utils.fake_engine import EngineServer, FakeEngine
from videoqa.service.app import create_app
from videoqa.service.settings import Settings
from videoqa.video.testing import make_test_video

TOKEN = "tracing-test-token"
SERVER, CLIENT, INTERNAL = 2, 3, 1  # opentelemetry.proto.trace.v1.Span.SpanKind


@dataclass
class Span:
    trace: str
    id: str
    parent: str
    name: str
    kind: int
    attrs: dict[str, Any]
    service: str


def _value(v: Any) -> Any:
    got = getattr(v, v.WhichOneof("value"))
    return tuple(_value(x) for x in got.values) if v.WhichOneof("value") == "array_value" else got


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True


@dataclass
class Collector:
    """Stands in for an OpenTelemetry collector's OTLP/HTTP traces endpoint (POST /v1/traces, protobuf)."""

    spans: list[Span] = field(default_factory=list)
    server: _Quiet | None = None

    def start(self) -> Collector:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            collector.spans.append(
                                Span(
                                    s.trace_id.hex(),
                                    s.span_id.hex(),
                                    s.parent_span_id.hex(),
                                    s.name,
                                    s.kind,
                                    {a.key: _value(a.value) for a in s.attributes},
                                    resource.get("service.name", ""),
                                )
                            )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class VideoHost:
    """Serves one video over HTTP on loopback and records the traceparent header of every request."""

    video: bytes
    traceparents: list[str | None] = field(default_factory=list)
    server: _Quiet | None = None

    def start(self) -> VideoHost:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                host.traceparents.append(self.headers.get("traceparent"))
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(host.video)))
                self.end_headers()
                self.wfile.write(host.video)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/clip.mp4"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    c = Collector().start()
    # The standard variables, read by the exporter and the SDK themselves (docs/service.md, Tracing).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "videoqa-under-test")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", raising=False)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VideoHost]:
    video = make_test_video(tmp_path_factory.mktemp("traced") / "clip.mp4", seconds=2, fps=8, gop=8)
    h = VideoHost(video.read_bytes()).start()
    yield h
    h.stop()


@pytest.fixture
def engine(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeEngine, list, str]]:
    """The engine API over a FakeEngine, recording the path and traceparent header of each request it gets."""
    fake = FakeEngine(tiny_checkpoint, answer="one two three")
    fake.cached_tokens = 7
    seen: list[tuple[str, str | None]] = []
    real = engine_server.create_engine_app

    def recording(*args: Any, **kwargs: Any) -> Any:
        app = real(*args, **kwargs)

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                tp = dict(scope["headers"]).get(b"traceparent")
                seen.append((scope["path"], tp.decode() if tp else None))
            await app(scope, receive, send)

        return asgi

    monkeypatch.setattr(engine_server, "create_engine_app", recording)
    server = EngineServer(fake, token=TOKEN).start()
    yield fake, seen, server.url
    server.stop()


def _settings(tmp_path: Path, engine_url: str, checkpoint: Path, **extra: Any) -> Settings:
    return Settings(
        engine_url=engine_url,
        engine_api_token=TOKEN,
        model=str(checkpoint),
        data_dir=tmp_path,
        decode_workers=1,
        job_workers=0,
        fetch_allow_cidrs=["127.0.0.0/8"],
        **extra,
    )


def _wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.05)


def _chat(client: TestClient, url: str, rid: str, stream: bool) -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "what?"}],
            }
        ],
        "num_frames": 4,
        "max_tokens": 3,
        "stream": stream,
    }
    r = client.post("/v1/chat/completions", json=body, headers={"x-request-id": rid})
    assert r.status_code == 200, r.text
    if stream:
        assert r.text.rstrip().endswith("data: [DONE]")


def _traceparent(header: str | None) -> tuple[str, str, bool] | None:
    """W3C traceparent `00-<trace id>-<parent span id>-<flags>` -> (trace id, parent span id, sampled)."""
    if header is None:
        return None
    version, trace, parent, flags = header.split("-")
    assert version == "00", header
    return trace, parent, bool(int(flags, 16) & 1)


def _method(span: Span) -> str:
    """The HTTP method of a client span, in the stable semantic conventions or the old ones (OTEL_SEMCONV_...)."""
    return span.attrs.get("http.request.method") or span.attrs["http.method"]


def _descends(span: Span, ancestor: Span, by_id: dict[str, Span]) -> bool:
    while span.parent:
        if span.parent == ancestor.id:
            return True
        span = by_id[span.parent]
    return False


def test_each_request_is_one_trace_with_fetch_frames_and_engine_spans_under_its_server_span(
    collector: Collector, host: VideoHost, engine, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    _, engine_seen, engine_url = engine
    app = create_app(_settings(tmp_path, engine_url, tiny_checkpoint, otel_exporter="otlp"))
    host.traceparents.clear()
    with TestClient(app) as client:
        _wait_ready(client)
        engine_seen.clear()
        _chat(client, host.url, "traced-1", stream=False)
        _chat(client, host.url, "traced-2", stream=True)  # same video and sampling: a frame-cache hit
        client.get("/metrics")  # excluded, and its calls to the engine are in no request: no trace at all
    # The lifespan's end flushed the batch: everything is at the collector now.
    spans = collector.spans
    by_id = {s.id: s for s in spans}
    servers = [s for s in spans if s.kind == SERVER]
    assert [s.name for s in servers] == ["POST /v1/chat/completions"] * 2, [(s.name, s.kind) for s in spans]
    assert {s.attrs.get("http.response.header.x_request_id") for s in servers} == {("traced-1",), ("traced-2",)}
    # One trace per request, and every span exported belongs to one of them (no health-check or /readyz traces).
    assert len({s.trace for s in servers}) == 2
    assert {s.trace for s in spans} == {s.trace for s in servers}
    assert all(s.service == "videoqa-under-test" for s in spans)  # OTEL_SERVICE_NAME
    for server, rid, hit in zip(servers, ("traced-1", "traced-2"), (False, True), strict=True):
        assert server.attrs["http.response.header.x_request_id"] == (rid,)
        mine = [s for s in spans if s.trace == server.trace and s is not server]
        assert all(_descends(s, server, by_id) for s in mine)
        [fetch] = [s for s in mine if s.name == "videoqa.fetch"]
        [frames] = [s for s in mine if s.name == "videoqa.frames"]
        [generate] = [s for s in mine if s.name == "videoqa.generate"]
        assert fetch.attrs["videoqa.url_host"] == "127.0.0.1" and fetch.attrs["videoqa.bytes"] == len(host.video)
        assert (frames.attrs["videoqa.frames"], frames.attrs["videoqa.cache_hit"]) == (4, hit)
        assert ("videoqa.frames_decoded" in frames.attrs) == (not hit)  # only a miss decodes
        assert generate.attrs["videoqa.frames"] == 4 and generate.attrs["videoqa.visual_tokens"] > 0
        assert generate.attrs["videoqa.cached_tokens"] == 7 and generate.attrs["videoqa.completion_tokens"] == 3
        assert {fetch.attrs["videoqa.request_id"], frames.attrs["videoqa.request_id"]} == {rid}
        assert generate.attrs["videoqa.request_id"] == rid
        # The HTTP calls below our spans: the video's GET under the fetch, the engine's POST under the generation.
        [get] = [s for s in mine if s.kind == CLIENT and s.parent == fetch.id]
        [post] = [s for s in mine if s.kind == CLIENT and s.parent == generate.id]
        assert (_method(get), _method(post)) == ("GET", "POST")
        assert len(mine) == 5  # nothing else: no span per body chunk sent or received (a stream sends many)
        # ... and they carried the trace to the servers they called (W3C traceparent), sampled.
        assert (server.trace, get.id, True) in [_traceparent(tp) for tp in host.traceparents]
        to_engine = [_traceparent(tp) for path, tp in engine_seen if path == "/internal/generate"]
        assert (server.trace, post.id, True) in to_engine


def test_tracing_off_exports_nothing_and_builds_nothing(
    collector: Collector, host: VideoHost, engine, tiny_checkpoint: Path, tmp_path: Path, monkeypatch
) -> None:
    _, engine_seen, engine_url = engine
    built: list[str] = []
    real_init = tracing.Tracing.__init__

    def spy(self: tracing.Tracing, exporter: Any) -> None:
        built.append(exporter)
        real_init(self, exporter)

    monkeypatch.setattr(tracing.Tracing, "__init__", spy)
    app = create_app(_settings(tmp_path, engine_url, tiny_checkpoint))  # VIDEOQA_OTEL_EXPORTER unset: none
    host.traceparents.clear()
    with TestClient(app) as client:
        _wait_ready(client)
        engine_seen.clear()
        _chat(client, host.url, "untraced", stream=False)
        assert app.state.tracing is tracing.NO_TRACING
        assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert built == [] and collector.spans == []
    # Nothing carried a trace context out either (httpx was not instrumented).
    assert host.traceparents == [None] and [tp for _, tp in engine_seen] == [None] * len(engine_seen)


def test_tracing_configured_without_the_otel_packages_stops_the_start_naming_the_setting_and_the_fix(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import opentelemetry.instrumentation.httpx` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.httpx", None)
    app = create_app(
        Settings(data_dir=tmp_path, decode_workers=1, job_workers=0, otel_exporter="otlp"),
        engine=FakeEngine(tiny_checkpoint),
    )
    with pytest.raises(tracing.TracingUnavailableError) as info, TestClient(app):
        pass
    message = str(info.value)
    assert "VIDEOQA_OTEL_EXPORTER=otlp" in message and "pip install 'videoqa[otel]'" in message, message
    assert "opentelemetry.instrumentation.httpx" in message
    # `videoqa serve` says the same and exits 2 before it starts anything.
    from videoqa.cli import app as cli

    env = {"VIDEOQA_OTEL_EXPORTER": "otlp", "VIDEOQA_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(cli, ["serve"], env=env)
    assert result.exit_code == 2, result.output
    assert "VIDEOQA_OTEL_EXPORTER=otlp" in result.output and "pip install 'videoqa[otel]'" in result.output


def test_the_service_name_defaults_to_videoqa_gateway_and_otel_service_name_replaces_it(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    for env, expected in ((None, "videoqa-gateway"), ("from-env", "from-env")):
        if env is not None:
            monkeypatch.setenv("OTEL_SERVICE_NAME", env)
        t = tracing.Tracing("console")
        try:
            assert t.provider.resource.attributes["service.name"] == expected
        finally:
            t.shutdown()
