"""The async engine the gateway talks to: a thin, typed wrapper over vLLM's AsyncLLM.

The gateway hands it a finished prompt as token ids (videoqa.model.chat: one `<video>` placeholder, control
tokens only where the chat template put them) and uint8 frames it has already
sampled and resized; the engine never fetches or decodes anything. Cancelling the async iterator (client
disconnect) aborts the request inside vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from videoqa.proc import exit_with_parent_on_fork

if TYPE_CHECKING:  # for annotations only: the split-mode gateway imports this module without vLLM installed
    from vllm.inputs import TextPrompt, TokensPrompt
    from vllm.v1.engine.async_llm import AsyncLLM

    from videoqa.model.layout import VideoLayout

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)
"""The text files a checkpoint's tokenizer may consist of (split mode ships them to gateways)."""


@dataclass
class GenerationRequest:
    """One generation: a prompt with at most one `<video>` placeholder per entry of `videos`."""

    prompt: list[int] | str
    """Prompt token ids from videoqa.model.chat.ChatFormat. Text is tokenized by vLLM with special tokens
    recognised, so only trusted text (tests, benchmarks) may be given as a string."""
    frames: np.ndarray | None = None
    """uint8 RGB frames [F, H, W, 3] for the prompt's `<video>` placeholder, or None for text only."""
    max_tokens: int = 256
    """Most new tokens to generate."""
    temperature: float = 0.0
    """0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    seed: int | None = None
    """Sampling seed, for reproducible non-greedy answers."""
    stop: list[str] = field(default_factory=list)
    """Stop strings."""
    top_k: int = 0
    """Sample from the k likeliest tokens only; 0 for all."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    """OpenAI's penalties, in [-2, 2]."""
    logprobs: int | None = None
    """Report the sampled token's log-probability and this many alternatives per generated token."""
    json_object: bool = False
    """Constrain the output to a JSON object (vLLM structured outputs)."""
    json_schema: dict | None = None
    """Constrain the output to JSON valid under this schema (vLLM structured outputs)."""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Unique id (used to abort)."""


@dataclass
class GenerationChunk:
    """A streamed piece of a generation; the last one has finished=True and final token counts."""

    delta: str
    """New text since the previous chunk."""
    text: str
    """All text so far."""
    finished: bool
    """Whether the generation is over."""
    finish_reason: str | None
    """"stop" or "length" once finished."""
    prompt_tokens: int
    """Prompt length in tokens, visual tokens included."""
    completion_tokens: int
    """Tokens generated so far."""
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache."""
    prompt_token_ids: list[int] | None = None
    """The prompt as the engine saw it (video placeholders expanded); on the first chunk only."""
    logprobs: list[dict[str, Any]] | None = None
    """With GenerationRequest.logprobs: OpenAI's logprobs.content entries for this chunk's new tokens."""


class EngineConfig(Protocol):
    """What the gateway reads of the served checkpoint's config: LlavaVideoConfig in process, the split-mode
    client's RemoteConfig (parsed without transformers) otherwise. Read-only: RemoteConfig is frozen."""

    @property
    def layout(self) -> VideoLayout: ...
    @property
    def grid(self) -> int: ...
    @property
    def image_size(self) -> int: ...
    @property
    def max_frames(self) -> int: ...
    @property
    def num_frames(self) -> int | None: ...
    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class VideoQAEngine(Protocol):
    """What the gateway needs from an engine (in-process LocalEngine, or the split-mode HTTP client)."""

    model_name: str
    max_model_len: int

    @property
    def config(self) -> EngineConfig: ...

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def ready(self) -> bool: ...
    def queue_depth(self) -> int: ...
    def generate(self, req: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]: ...
    async def abort(self, request_id: str) -> None: ...
    async def tokenizer(self) -> Any: ...


def _engine_input(prompt: list[int] | str, frames: np.ndarray | None) -> TextPrompt | TokensPrompt:
    """vLLM's prompt dict: the token ids (or trusted text), and the uint8 frames [F, H, W, 3] as the one video."""
    request: TextPrompt | TokensPrompt = (
        {"prompt": prompt} if isinstance(prompt, str) else {"prompt_token_ids": list(prompt)}
    )
    if frames is not None:
        request["multi_modal_data"] = {"video": frames}
    return request


def vllm_series(exposition: str) -> str:
    """Only the vllm:* families of a Prometheus text exposition (not the process/python collectors)."""
    keep = []
    for line in exposition.splitlines():
        name = line.split(" ", 3)[2] if line.startswith("# ") and len(line.split(" ", 3)) > 2 else line
        if name.startswith("vllm:"):
            keep.append(line)
    return "\n".join(keep) + ("\n" if keep else "")


def _sampling_params(req: GenerationRequest, output_kind: Any) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    structured = None
    if req.json_schema is not None:
        structured = StructuredOutputsParams(json=req.json_schema)
    elif req.json_object:
        structured = StructuredOutputsParams(json_object=True)
    return SamplingParams(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        seed=req.seed,
        stop=req.stop or None,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logprobs=req.logprobs,
        structured_outputs=structured,
        output_kind=output_kind,
    )


def _token_entry(text: str | None, logprob: float) -> dict[str, Any]:
    token = text or ""
    return {"token": token, "logprob": max(logprob, -9999.0), "bytes": list(token.encode())}


def _openai_logprobs(piece: Any, top: int) -> list[dict]:
    """vLLM's per-token {id: Logprob} maps -> OpenAI's logprobs.content entries (sampled token, top alternatives)."""
    out = []
    for token_id, ranked in zip(piece.token_ids, piece.logprobs or [], strict=False):
        chosen = ranked[token_id]
        alternatives = sorted(ranked.values(), key=lambda lp: lp.rank if lp.rank is not None else 1 << 30)[:top]
        entry = _token_entry(chosen.decoded_token, chosen.logprob)
        entry["top_logprobs"] = [_token_entry(lp.decoded_token, lp.logprob) for lp in alternatives]
        out.append(entry)
    return out


class LocalEngine:
    """vLLM AsyncLLM in this process (its engine core runs in a child process, as vLLM always does)."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        model_name: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        max_num_seqs: int = 8,
        kv_cache_gib: int | None = None,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        engine_args: dict[str, Any] | None = None,
    ) -> None:
        """`engine_args`: further vLLM AsyncEngineArgs fields (gpu_memory_utilization, quantization, ...), applied
        over the ones this class sets."""
        from videoqa.model.config import LlavaVideoConfig

        self.checkpoint = Path(checkpoint)
        self.config = LlavaVideoConfig.from_pretrained(self.checkpoint)
        self.model_name = model_name or self.checkpoint.name
        self.max_model_len = int(max_model_len or self.config.text.max_position_embeddings)
        self._dtype = dtype
        self._max_num_seqs = max_num_seqs
        self._tp = tensor_parallel_size
        self._prefix_caching = enable_prefix_caching
        self._seed = seed
        self._extra_args = dict(engine_args or {})
        if self._extra_args:
            self._check_extra_args()  # a typo stops the start, not the engine build minutes later
        if kv_cache_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        self._engine: AsyncLLM | None = None
        self._inflight: set[str] = set()
        self.prefix_cache_hit_tokens = 0
        self.prompt_tokens_total = 0

    def _check_extra_args(self) -> None:
        import dataclasses

        from vllm.engine.arg_utils import AsyncEngineArgs

        known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
        unknown = sorted(set(self._extra_args) - known)
        if unknown:
            raise ValueError(
                f"unknown vLLM engine argument(s) {unknown} in VIDEOQA_ENGINE_ARGS; "
                "use the field names of vllm.engine.arg_utils.AsyncEngineArgs (e.g. block_size, max_logprobs)"
            )

    def engine_args(self) -> Any:
        """The vLLM AsyncEngineArgs this engine starts with (built without starting anything)."""
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs

        self._check_extra_args()
        base: dict[str, Any] = dict(
            model=str(self.checkpoint),
            served_model_name=[self.model_name],
            dtype=self._dtype,
            max_model_len=self.max_model_len,
            max_num_seqs=self._max_num_seqs,
            tensor_parallel_size=self._tp,
            enable_prefix_caching=self._prefix_caching,
            seed=self._seed,
            limit_mm_per_prompt={"video": 1},
            # Compact JSON for response_format: with free whitespace a weak model pads forever inside a valid
            # document (vLLM applies this engine-wide, not per request).
            structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
        )
        return AsyncEngineArgs(**(base | self._extra_args))

    async def start(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        args = self.engine_args()
        # vLLM forks its engine core (from the thread below, so PR_SET_PDEATHSIG would follow that thread, not
        # this process): make forked children watch this process and exit with it, even when it is SIGKILLed.
        exit_with_parent_on_fork()
        # Building the engine blocks for tens of seconds (profiling, compilation): keep the loop free.
        self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, args)

    async def metrics_text(self) -> str:
        """vLLM's own Prometheus series (vllm:*: KV-cache use, running/waiting requests, prefix-cache hits...),
        which AsyncLLM registers in prometheus_client's default registry of this process."""
        from prometheus_client import REGISTRY, generate_latest

        return vllm_series(generate_latest(REGISTRY).decode())

    async def tokenizer(self) -> Any:
        """The checkpoint's tokenizer (with its chat template)."""
        from transformers import AutoTokenizer

        return await asyncio.to_thread(AutoTokenizer.from_pretrained, self.checkpoint)

    async def stop(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await asyncio.to_thread(engine.shutdown)

    def ready(self) -> bool:
        return self._engine is not None and not getattr(self._engine, "errored", False)

    def queue_depth(self) -> int:
        return len(self._inflight)

    def engine_unfinished(self) -> int:
        """Requests vLLM itself still tracks (its output processor's state): what an abort must empty, whatever
        this wrapper's own bookkeeping says."""
        return self._engine.get_num_unfinished_requests() if self._engine is not None else 0

    async def abort(self, request_id: str) -> None:
        if self._engine is not None:
            await self._engine.abort(request_id)

    async def score(self, prompt: list[int] | str, frames: np.ndarray | None, continuation_tokens: int) -> float:
        """Sum of log-probabilities of the prompt's last `continuation_tokens` tokens (multiple choice by
        likelihood: the prompt ends with one option's answer)."""
        from vllm import SamplingParams

        if self._engine is None:
            raise RuntimeError("engine is not started")
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        final = None
        async for out in self._engine.generate(_engine_input(prompt, frames), params, uuid.uuid4().hex):
            final = out
        assert final is not None and final.prompt_logprobs is not None and final.prompt_token_ids is not None
        ids = final.prompt_token_ids
        tail = range(len(ids) - continuation_tokens, len(ids))
        total = 0.0
        for i in tail:
            entry = final.prompt_logprobs[i]
            assert entry is not None  # only the first prompt token has no logprobs
            total += entry[ids[i]].logprob
        return total

    async def generate(self, req: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        from vllm.sampling_params import RequestOutputKind

        if self._engine is None:
            raise RuntimeError("engine is not started")
        params = _sampling_params(req, RequestOutputKind.DELTA)
        prompt = _engine_input(req.prompt, req.frames)
        self._inflight.add(req.request_id)
        text, completion, finished, first = "", 0, False, True
        try:
            async for out in self._engine.generate(prompt, params, req.request_id):
                piece = out.outputs[0]
                completion += len(piece.token_ids)
                text += piece.text
                finished = out.finished
                prompt_ids = list(out.prompt_token_ids or [])
                prompt_tokens = len(prompt_ids)
                cached = out.num_cached_tokens or 0
                if finished:
                    self.prompt_tokens_total += prompt_tokens
                    self.prefix_cache_hit_tokens += cached
                yield GenerationChunk(
                    delta=piece.text,
                    text=text,
                    finished=finished,
                    finish_reason=piece.finish_reason if finished else None,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion,
                    cached_tokens=cached,
                    prompt_token_ids=prompt_ids if first else None,
                    logprobs=_openai_logprobs(piece, req.logprobs) if req.logprobs is not None else None,
                )
                first = False
        finally:
            self._inflight.discard(req.request_id)
            if not finished:  # the caller went away (disconnect, timeout): free the engine's slot
                with contextlib.suppress(Exception):
                    await self.abort(req.request_id)
