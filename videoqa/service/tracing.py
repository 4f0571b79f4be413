"""Optional OpenTelemetry tracing, off unless VIDEOQA_OTEL_EXPORTER says otlp or console (docs/service.md, Tracing).

Off (the default): the gateway uses NO_TRACING, whose spans are one shared object that does nothing, and nothing in
this module imports opentelemetry, so a gateway installed without the `otel` extra runs as before. On: `Tracing`
(built once in the app's lifespan) holds one TracerProvider exporting in batches, instruments the FastAPI app (a
server span per request) and httpx (a client span per outgoing call, with the W3C `traceparent` header: URL fetches
and split-mode engine calls), and makes the gateway's own spans, children of whatever span is current:
videoqa.fetch, videoqa.frames and videoqa.generate.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from videoqa.service.requests import current_request_id

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Link, Tracer, TraceState
    from opentelemetry.util.types import Attributes

AttrValue = str | bool | int | float

# Probes and scrapes come every few seconds from every kubelet and Prometheus: traced, they would bury the requests.
# OTEL_PYTHON_FASTAPI_EXCLUDED_URLS, when set, replaces this list (the instrumentation's own variable).
EXCLUDED_URLS = "/healthz,/readyz,/metrics"
SERVICE_NAME = "videoqa-gateway"
"""service.name when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one."""


class SpanLike(Protocol):
    def set(self, **attrs: AttrValue | None) -> None:
        """Add attributes (named videoqa.<key>; None values are left out)."""


class _NoSpan:
    """The span of NO_TRACING: entering, leaving and setting attributes do nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set(self, **attrs: AttrValue | None) -> None:
        return None


_NO_SPAN = _NoSpan()


class NoTracing:
    """Tracing off: no provider, no instrumentation, no opentelemetry import."""

    enabled = False

    def start(self, app: FastAPI) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def span(self, name: str, **attrs: AttrValue | None) -> _NoSpan:
        return _NO_SPAN


NO_TRACING = NoTracing()


class TracingUnavailableError(RuntimeError):
    """Tracing is configured but the `otel` extra is not installed (raised at start-up)."""


def _attributes(attrs: Mapping[str, AttrValue | None]) -> dict[str, AttrValue]:
    return {f"videoqa.{k}": v for k, v in attrs.items() if v is not None}


class _Span:
    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, **attrs: AttrValue | None) -> None:
        self._span.set_attributes(_attributes(attrs))


class Tracing:
    """Tracing on: one TracerProvider and the instrumentation, for one app's lifespan (start() ... shutdown())."""

    enabled = True

    def __init__(self, exporter: Literal["otlp", "console"]) -> None:
        require(exporter)
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        span_exporter: SpanExporter
        if exporter == "otlp":
            # Reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318),
            # OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT and _COMPRESSION itself.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter()
        else:
            span_exporter = ConsoleSpanExporter()
        resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        self.provider: TracerProvider = TracerProvider(resource=resource)
        # Wrap the sampler the provider read from OTEL_TRACES_SAMPLER (default: parent-based, always on).
        self.provider.sampler = _no_root_client_spans(self.provider.sampler)
        self.provider.add_span_processor(BatchSpanProcessor(span_exporter))
        self.tracer: Tracer = self.provider.get_tracer("videoqa.service")
        self._app: FastAPI | None = None

    def start(self, app: FastAPI) -> None:
        """Instrument `app` (a server span per request) and every httpx client in this process."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.provider,
            excluded_urls=None if os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") else EXCLUDED_URLS,
            # One span per request, not one more per body chunk sent (a stream sends one per token).
            exclude_spans=["receive", "send"],
            # The request id (RequestIdMiddleware sets it, inside this span) as http.response.header.x_request_id.
            http_capture_headers_server_response=["x-request-id"],
        )
        # The instrumentor patches how the middleware stack is built, but Starlette built it already, for the
        # lifespan call that runs this: build it again, so the requests that follow go through the server span.
        app.middleware_stack = app.build_middleware_stack()
        self._app = app
        # Patches the httpx transports' classes: the clients made before this (split mode's engine clients) too.
        HTTPXClientInstrumentor().instrument(tracer_provider=self.provider)

    def shutdown(self) -> None:
        """Undo the instrumentation and export what is still queued (the lifespan's end)."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().uninstrument()
        if self._app is not None:
            FastAPIInstrumentor.uninstrument_app(self._app)
            self._app = None
        self.provider.shutdown()

    @contextmanager
    def span(self, name: str, **attrs: AttrValue | None) -> Iterator[SpanLike]:
        """A child of the current span, current itself while open; an exception leaving it marks it failed."""
        rid = current_request_id()  # "-" outside requests (jobs): left out
        with self.tracer.start_as_current_span(
            name, attributes=_attributes({"request_id": rid if rid != "-" else None, **attrs})
        ) as span:
            yield _Span(span)


# What tracing imports: the `otel` extra (opentelemetry-api comes with the sdk).
MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.instrumentation.fastapi",
    "opentelemetry.instrumentation.httpx",
)


def require(exporter: Literal["none", "otlp", "console"]) -> None:
    """Raise TracingUnavailableError, naming the setting and the fix, when tracing is on and the otel extra is not
    (wholly) installed: at start-up, instead of failing the first request or silently tracing nothing."""
    if exporter == "none":
        return
    missing = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise TracingUnavailableError(
            f"VIDEOQA_OTEL_EXPORTER={exporter} turns tracing on, but {', '.join(missing)} cannot be imported: "
            "pip install 'videoqa[otel]' (or set VIDEOQA_OTEL_EXPORTER=none)"
        )


def build(exporter: Literal["none", "otlp", "console"]) -> Tracing | NoTracing:
    return NO_TRACING if exporter == "none" else Tracing(exporter)


def _no_root_client_spans(inner: Sampler) -> Sampler:
    """Drop outgoing calls made outside any request (split mode's engine health checks every second), each of which
    would otherwise be a trace of its own; everything else is up to `inner`."""
    # Here, not at the top: this module is imported with tracing off too, without opentelemetry.
    from opentelemetry.sdk.trace import sampling
    from opentelemetry.trace import SpanKind, get_current_span

    class NoRootClientSpans(sampling.Sampler):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Attributes = None,
            links: Sequence[Link] | None = None,
            trace_state: TraceState | None = None,
        ) -> sampling.SamplingResult:
            if kind == SpanKind.CLIENT and not get_current_span(parent_context).get_span_context().is_valid:
                return sampling.SamplingResult(sampling.Decision.DROP)
            return inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"NoRootClientSpans{{{inner.get_description()}}}"

    return NoRootClientSpans()
