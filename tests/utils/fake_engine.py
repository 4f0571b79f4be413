"""An in-process engine implementing the VideoQAEngine protocol without vLLM, for the fast tier.

The gateway's own logic (validation, budgets, sampling, prompts, admission, error mapping) is tested against it in
seconds; what the engine does with a request (real generation, aborts in vLLM, prefix caching) stays in the engine
tier. It records every request it receives, so a test can check exactly what the gateway sent, or that nothing was
sent at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from videoqa.model.engine import GenerationChunk, GenerationRequest
from videoqa.service.engine_client import RemoteConfig


class FakeEngine:
    """Answers every request with `answer`, one word per chunk; `hold` (an Event) makes generations wait for it."""

    def __init__(self, checkpoint: Path, max_model_len: int = 4096, answer: str = "a fake answer") -> None:
        self.checkpoint = checkpoint
        self.model_name = checkpoint.name
        self.config = RemoteConfig.from_dict(json.loads((checkpoint / "config.json").read_text()))
        self.max_model_len = max_model_len
        self.answer = answer
        self.requests: list[GenerationRequest] = []
        self.aborted: list[str] = []
        self.up = False
        """What ready() reports; a test sets it to False to stand for an engine that went away."""
        self.hold: asyncio.Event | None = None
        self.fail: BaseException | None = None
        """Raised by generate() instead of answering."""
        self._tokenizer: Any = None
        self._running = 0

    async def start(self) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, self.checkpoint)
        # Last, after the tokenizer: the gateway asks tokenizer() right after start() returns, with no await in
        # between that could let a request see a ready engine without the gateway's chat format.
        self.up = True

    async def stop(self) -> None:
        self.up = False

    def ready(self) -> bool:
        return self.up

    def queue_depth(self) -> int:
        return self._running

    async def tokenizer(self) -> Any:
        return self._tokenizer

    async def metrics_text(self) -> str:
        return ""

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(req)
        self._running += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.fail is not None:
                raise self.fail
            words = self.answer.split(" ")[: req.max_tokens]
            text = ""
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                text += delta
                last = i == len(words) - 1
                yield GenerationChunk(
                    delta=delta,
                    text=text,
                    finished=last,
                    finish_reason=("length" if len(words) == req.max_tokens else "stop") if last else None,
                    prompt_tokens=len(req.prompt),
                    completion_tokens=i + 1,
                    prompt_token_ids=list(req.prompt) if i == 0 and not isinstance(req.prompt, str) else None,
                )
        finally:
            self._running -= 1
