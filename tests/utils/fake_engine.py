"""An in-process engine implementing the VideoQAEngine protocol without vLLM, for the fast tier.

The gateway's own logic (validation, budgets, sampling, prompts, admission, error mapping) is tested against it in
seconds; what the engine does with a request (real generation, aborts in vLLM, prefix caching) stays in the engine
tier. It records every request it receives, so a test can check exactly what the gateway sent, or that nothing was
sent at all.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from videoqa.model.engine import GenerationChunk, GenerationRequest
from videoqa.service.engine_server import RemoteConfig


class FakeEngine:
    """Answers every request with `answer`, one word per chunk. Behind videoqa.service.engine_server's app it is a
    stand-in `videoqa engine` on a real port (EngineServer below)."""

    def __init__(
        self, checkpoint: Path, max_model_len: int = 4096, answer: str = "a fake answer", model_name: str = ""
    ) -> None:
        self.checkpoint = checkpoint
        self.model_name = model_name or checkpoint.name
        self.config = RemoteConfig.from_dict(json.loads((checkpoint / "config.json").read_text()))
        self.max_model_len = max_model_len
        self.answer = answer
        self.requests: list[GenerationRequest] = []
        self.aborted: list[str] = []
        self.up = False
        """What ready() reports; a test sets it to False to stand for an engine that went away."""
        self.hold: threading.Event | None = None
        """While set and not yet released, generations wait for it (it works across event loops and threads: the
        engine may run behind a real engine server in another thread)."""
        self.fail: BaseException | None = None
        """Raised by generate() instead of answering (after `fail_after` chunks of the answer)."""
        self.fail_after = 0
        """With `fail`: how many chunks generate() yields before it raises (an engine failing mid-stream)."""
        self.cached_tokens = 0
        """What every chunk reports as prompt tokens served from the prefix cache (the real engine's come from vLLM)."""
        self.chunk_delay_s = 0.0
        """Seconds generate() sleeps before each chunk (a slow stream)."""
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

    def engine_unfinished(self) -> int:
        return self._running

    async def tokenizer(self) -> Any:
        return self._tokenizer

    async def metrics_text(self) -> str:
        """One vllm:* gauge, as the real engine's exposition has them."""
        return (
            "# HELP vllm:num_requests_running Requests running.\n# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{self.model_name}"}} {float(self._running)}\n'
        )

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(req)
        self._running += 1
        try:
            if self.hold is not None:
                await asyncio.to_thread(self.hold.wait)
            words = self.answer.split(" ")[: req.max_tokens]
            text = ""
            for i, word in enumerate(words):
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                if self.fail is not None and i >= self.fail_after:
                    raise self.fail
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
                    cached_tokens=self.cached_tokens,
                    prompt_token_ids=list(req.prompt) if i == 0 and not isinstance(req.prompt, str) else None,
                )
        finally:
            self._running -= 1


class EngineServer:
    """The real engine API (videoqa.service.engine_server) over a FakeEngine, on a loopback port, in a thread:
    what a gateway in split mode talks to, started and stopped in well under a second."""

    def __init__(self, engine: FakeEngine, token: str = "", port: int = 0) -> None:
        from tests.utils.net import free_port

        self.engine, self.token = engine, token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> EngineServer:
        import uvicorn

        from tests.utils.net import wait_http
        from videoqa.service.engine_server import create_engine_app

        app = create_engine_app(self.engine, token=self.token)  # type: ignore[arg-type]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"engine-{self.port}", daemon=True)
        self._thread.start()
        wait_http(f"{self.url}/internal/health", 60)
        return self

    def stop(self) -> None:
        """Close the port: new connections are refused, as from an engine that went away."""
        if self._server is not None and self._thread is not None:
            if self.engine.hold is not None:
                self.engine.hold.set()
            self._server.should_exit = True
            self._thread.join(30)
            self._server = self._thread = None
