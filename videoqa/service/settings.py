"""One settings object, read from environment variables prefixed VIDEOQA_ (pydantic-settings)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, IPvAnyNetwork, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from videoqa.service.state.factory import check_state_settings
from videoqa.service.tenants import check_keyrings, parse_keys

if TYPE_CHECKING:  # at run time imported where used: it brings torch and vLLM
    from videoqa.model.engine import LocalEngine


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDEOQA_", env_file=None, extra="ignore")

    # --- model / engine -----------------------------------------------------------------------------
    model: str | None = None
    """Checkpoint directory to serve; unset -> the embedded default (the demo checkpoint, or a tiny one)."""
    model_name: str | None = None
    """Name reported by /v1/models and accepted in requests (default: the checkpoint dir's name)."""
    engine_url: str | None = None
    """Split mode: talk to a `videoqa engine` at this URL instead of running the engine in-process."""
    engine_api_token: str = ""
    """Split mode's shared secret: `videoqa engine` refuses internal calls without it (401) and gateways send it.
    Empty = no check (only on a network nothing else can reach)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Engine dtype."""
    max_model_len: int | None = Field(default=None, ge=256)
    """Context length; default: the checkpoint's."""
    max_num_seqs: int = Field(default=8, ge=1)
    """Sequences the engine batches at once."""
    kv_cache_gib: int | None = 1
    """CPU KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE); ignored on GPU."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs per engine."""
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    """Share of GPU memory vLLM may use (weights, activations, KV cache); default: vLLM's (0.9)."""
    enforce_eager: bool | None = None
    """True: no CUDA graphs (less memory, slower decoding); default: vLLM's (graphs on)."""
    quantization: str | None = None
    """Weight quantization method (vLLM's names: fp8, awq, gptq, bitsandbytes, ...); vLLM checks it when the
    engine is built."""
    kv_cache_dtype: Literal["auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    """KV cache element type (fp8 halves its memory on GPUs that support it)."""
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    """Tokens the engine schedules per step (prefill chunk size); default: vLLM's."""
    engine_args: dict[str, Any] = {}
    """Any other vLLM engine argument (AsyncEngineArgs field names), as a JSON object, e.g.
    VIDEOQA_ENGINE_ARGS='{"block_size": 32, "max_logprobs": 7}'; applied last, so it overrides the settings above.
    An unknown name fails the engine's start."""

    # --- HTTP ---------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = 8000
    """Port to bind."""
    log_format: Literal["text", "json"] = "text"
    """text: readable lines for development; json: one JSON object per line (with the request id)."""
    otel_exporter: Literal["none", "otlp", "console"] = "none"
    """OpenTelemetry tracing (needs `pip install 'videoqa[otel]'`): none = off; otlp = OTLP over HTTP to
    OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318; OTEL_SERVICE_NAME names the service, default
    videoqa-gateway); console = spans printed to stdout (development). docs/service.md, Tracing."""
    api_keys: str = ""
    """Tenant API keys, comma-separated, sent as `Authorization: Bearer KEY`. Each entry is `NAME:SHA256HEX`
    (tenant NAME; the sha256 hex digest of its key, so the key itself is stored nowhere) or, for development, the
    plain key (tenant `key-` + 8 hex digits of its hash). Empty = no auth: one tenant, `anonymous`."""
    admin_keys: str = ""
    """Operator keys, same format, kept apart from tenant keys: they list, read and cancel every tenant's jobs."""
    max_upload_bytes: int = 1024**3
    """Largest video upload (multipart), in bytes (413 beyond)."""
    max_json_bytes: int = 64 * 1024**2
    """Largest JSON body (data: URLs included), in bytes (413 beyond)."""
    rate_limit_per_minute: int = Field(default=0, ge=0)
    """Requests per tenant (without keys: per client address) in any 60 s (a moving window); 0 = unlimited."""
    trusted_proxies: list[IPvAnyNetwork] = []
    """Proxies (addresses or networks, JSON list) whose X-Forwarded-For is believed when finding the client
    address for rate limits; empty = the connection's own address (docs/service.md)."""
    max_inflight: int = Field(default=32, ge=1)
    """Generation requests in flight in this gateway; more wait in line (max_waiting)."""
    max_waiting: int = Field(default=64, ge=0)
    """Requests that may wait (first in, first out) for an in-flight slot; beyond, 503 + Retry-After (derived from
    the measured service rate). 0 = refuse as soon as max_inflight are in flight."""
    max_wait_s: float = Field(default=30.0, gt=0)
    """Longest wait in that line; then 503 + Retry-After."""
    max_engine_queue: int = Field(default=64, ge=1)
    """Engine queue depth beyond which new requests get 503 + Retry-After."""
    shutdown_grace_s: float = 30.0
    """Seconds to finish in-flight requests on shutdown."""

    # --- video --------------------------------------------------------------------------------------
    data_dir: Path = Path("~/.cache/videoqa/data").expanduser()
    """Where uploaded and fetched videos are stored (named by content hash). Gateways that share a Redis must
    share this directory too (e.g. a ReadWriteMany volume), so any of them can serve any upload or job."""
    default_num_frames: int | None = None
    """Frames sampled when a request does not say (default: the checkpoint's num_frames, else its max_frames: 64
    for LLaVA-Video)."""
    max_frames: int = Field(default=64, ge=1)
    """Most frames a request may ask for."""
    default_policy: Literal["fast", "exact"] = "fast"
    """Sampling policy when a request does not say: fast (nearest keyframe) | exact."""
    decode_workers: int = Field(default=2, ge=1)
    """Decode worker processes."""
    decode_timeout_s: float = 60.0
    """Wall time for decoding one video."""
    max_video_seconds: float = 4 * 3600
    """Longest video accepted."""
    max_video_pixels: int = 4096 * 2304
    """Largest frame accepted (width x height)."""
    frame_cache_ttl_s: float = 3600.0
    """How long decoded frames stay cached."""
    frame_cache_max_bytes: int = Field(default=64 * 1024**2, ge=1)
    """Largest decoded-frame entry cached (bigger ones are decoded each time). Honoured as set: refused at start
    if over the in-process cache's capacity (no Redis) or over Redis's 512 MiB value limit."""
    frame_cache_capacity_bytes: int = Field(default=512 * 1024**2, ge=1)
    """Total size of the in-process frame cache (least recently used evicted); with Redis, its maxmemory."""
    frame_cache_scope: Literal["shared", "tenant"] = "shared"
    """`shared`: tenants share decoded frames of identical videos (keyed by content hash: only a caller holding
    the same bytes can hit an entry). `tenant`: one cache per tenant, so cache hits and their latency cannot tell
    a tenant that another one has sent the same video (docs/service.md)."""

    # --- URL fetching ------------------------------------------------------------------------------
    fetch_max_bytes: int = 512 * 1024**2
    """Largest video fetched from a URL."""
    fetch_timeout_s: float = 120.0
    """Total time for fetching one URL."""
    fetch_allow_domains: list[str] = []
    """If set, video URLs must be on these domains (or subdomains)."""
    fetch_allow_cidrs: list[str] = []
    """Non-public networks that may be fetched from anyway (empty: none; for tests and private mirrors)."""

    # --- state and jobs ----------------------------------------------------------------------------
    redis_url: str | None = None
    """Redis for shared state (cache, files, limits, jobs); unset = in-process."""
    redis_namespace: str = "videoqa"
    """Key prefix in Redis."""
    job_workers: int = Field(default=1, ge=0)
    """Background job workers in this gateway (0 = submit only)."""
    job_lease_s: float = 30.0
    """A running job whose worker stops renewing its lease for this long is re-queued."""
    job_max_attempts: int = Field(default=3, ge=1)
    """Attempts before a job is marked failed (an engine that was busy does not count as an attempt)."""
    job_result_ttl_s: int = Field(default=7 * 86400, ge=1)
    """How long a succeeded or cancelled job's record (and result) is kept."""
    job_failed_ttl_s: int = Field(default=7 * 86400, ge=1)
    """How long a failed job's record (and error) is kept."""

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        check_keyrings(self.tenant_keys, self.admin_keyring)  # bad entries fail at startup, not per request
        check_state_settings(self)
        return self

    @cached_property
    def tenant_keys(self) -> dict[str, str]:
        """sha256 hex digest of each tenant key -> tenant name."""
        return parse_keys(self.api_keys, "api_keys")

    @cached_property
    def admin_keyring(self) -> dict[str, str]:
        """sha256 hex digest of each admin key -> operator name."""
        return parse_keys(self.admin_keys, "admin_keys")

    def local_engine(self, checkpoint: str | Path | None = None) -> LocalEngine:
        """The in-process vLLM engine these settings describe (embedded `serve` and `videoqa engine`)."""
        from videoqa.model.engine import LocalEngine
        from videoqa.model.tiny import default_checkpoint

        passed = {
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            "quantization": self.quantization,
            "kv_cache_dtype": self.kv_cache_dtype,
            "max_num_batched_tokens": self.max_num_batched_tokens,
        }
        return LocalEngine(
            checkpoint or self.model or default_checkpoint(),
            model_name=self.model_name,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            max_num_seqs=self.max_num_seqs,
            kv_cache_gib=self.kv_cache_gib,
            tensor_parallel_size=self.tensor_parallel_size,
            # None = vLLM's own default; the escape hatch goes last so it wins.
            engine_args={k: v for k, v in passed.items() if v is not None} | self.engine_args,
        )


class SettingsError(ValueError):
    """Settings that cannot work, named by their environment variables (raised at start-up)."""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (+ overrides), or a SettingsError naming each bad VIDEOQA_* variable, what
    it got and what it takes, so a typo stops the start instead of failing requests later."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            name = ".".join(str(p) for p in e["loc"]) or "settings"
            env = f"VIDEOQA_{name.upper()}" if e["loc"] else "settings"
            got = f" (got {e['input']!r})" if e.get("type") != "missing" and e["loc"] else ""
            lines.append(f"{env}: {e['msg']}{got}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
