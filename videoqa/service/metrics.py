"""Prometheus metrics (own registry, so several apps in one process — tests — stay independent)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from videoqa.video import DecodePool


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("videoqa_requests_total", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "videoqa_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.decode_seconds = Histogram(
            "videoqa_decode_seconds",
            "Frame sampling time (cache misses)",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.frames = Histogram(
            "videoqa_frames_per_request", "Frames per request", registry=r, buckets=(1, 4, 8, 16, 32, 64, 128)
        )
        self.visual_tokens = Histogram(
            "videoqa_visual_tokens_per_request",
            "Visual tokens per request",
            registry=r,
            buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
        )
        self.ttft = Histogram(
            "videoqa_time_to_first_token_seconds",
            "Time to first token",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.tokens_per_s = Histogram(
            "videoqa_generation_tokens_per_second",
            "Generated tokens per second",
            registry=r,
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
        )
        self.generated = Counter("videoqa_generated_tokens_total", "Generated tokens", registry=r)
        self.queue_depth = Gauge("videoqa_engine_queue_depth", "Requests waiting or running in the engine", registry=r)
        self.cache_hits = Counter("videoqa_frame_cache_hits_total", "Decoded-frame cache hits", registry=r)
        self.cache_misses = Counter("videoqa_frame_cache_misses_total", "Decoded-frame cache misses", registry=r)
        self.frames_decoded = Counter(
            "videoqa_frames_decoded_total",
            "Frames the decoder decoded for frame-cache misses (one per keyframe hit; more when a target is "
            "decoded exactly from its GOP's keyframe)",
            registry=r,
        )
        self.jobs = Counter("videoqa_jobs_total", "Jobs by outcome", ["event"], registry=r)
        self.job_backlog = Gauge(
            "videoqa_job_backlog",
            "Unfinished jobs in the shared queue by state (queued, delayed: backing off, running), read at scrape",
            ["state"],
            registry=r,
        )
        self.redis_up = Gauge("videoqa_redis_up", "1 when the configured Redis answers", registry=r)
        self.inflight = Gauge("videoqa_inflight_requests", "Generation requests holding an admission slot", registry=r)
        self.waiting = Gauge("videoqa_waiting_requests", "Requests queued for an admission slot", registry=r)
        self.admission_wait = Histogram(
            "videoqa_admission_wait_seconds",
            "Time a request waited for an admission slot",
            registry=r,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.rejected = Counter("videoqa_rejected_total", "Requests refused by limits", ["reason"], registry=r)
        self.engine_outstanding = Gauge(
            "videoqa_engine_outstanding_requests",
            "Split mode: requests outstanding on each engine from every gateway sharing this state (what routing "
            "compares), read at scrape",
            ["engine"],
            registry=r,
        )
        self.prefix_cache_hit_tokens = Counter(
            "videoqa_prefix_cache_hit_tokens_total",
            "Prompt tokens the engine served from its prefix cache (each engine request's cached_tokens)",
            registry=r,
        )

    def watch_decode_pool(self, pool: DecodePool) -> None:
        """videoqa_decode_pool_restarts_total: the pool's own count (DecodePool.restarts), read at each scrape."""
        self.registry.register(_PoolRestarts(pool))


class _PoolRestarts(Collector):
    def __init__(self, pool: DecodePool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "videoqa_decode_pool_restarts",
            "Decode pool rebuilds after a worker hung past its timeout or died (crash, memory limit)",
            value=self.pool.restarts,
        )


def merge_labelled(texts: list[tuple[str, str]]) -> str:
    """Several engines' Prometheus expositions as one, each sample labelled engine=<url> (the same families from
    each engine would otherwise collide)."""
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
