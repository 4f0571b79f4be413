"""HTTPTeacher against a real local HTTP server (FastAPI under uvicorn on 127.0.0.1), scripted per test.

Each test registers a plan under a fresh model name: the server answers that model's requests with the planned
steps in order (repeating the last one), and records every request it saw, when, and how many were in flight.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, TypeAdapter

from videoqa.synth.http_teacher import HTTPTeacher, TeacherError, TeacherPrompt, TeacherUsage, extract_json


@dataclass
class Step:
    """One planned answer: a status, the reply text (or the error message), and optional delay/headers/raw body."""

    status: int = 200
    content: str = "ok"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None  # a non-JSON body, sent verbatim
    prompt_tokens: int = 10
    completion_tokens: int = 5


@dataclass
class Seen:
    """A request as the server received it."""

    body: dict[str, Any]
    headers: dict[str, str]
    at: float


class ScriptedServer:
    """The test server's state: plans by model name, and what each model's requests looked like."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.plans: dict[str, deque[Step]] = {}
        self.seen: dict[str, list[Seen]] = defaultdict(list)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.url = ""

    def plan(self, *steps: Step) -> str:
        """Register the steps under a fresh model name, which the test then uses as its teacher's model."""
        model = f"case-{uuid.uuid4().hex[:12]}"
        with self.lock:
            self.plans[model] = deque(steps)
        return model

    def requests(self, model: str) -> list[Seen]:
        with self.lock:
            return list(self.seen[model])

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            model = body.get("model", "")
            with self.lock:
                steps = self.plans.get(model)
                if not steps:
                    return JSONResponse({"error": {"message": f"no plan for {model!r}"}}, status_code=404)
                step = steps[0] if len(steps) == 1 else steps.popleft()
                self.seen[model].append(Seen(body, dict(request.headers), time.monotonic()))
                self.in_flight[model] += 1
                self.max_in_flight[model] = max(self.max_in_flight[model], self.in_flight[model])
            try:
                await asyncio.sleep(step.delay)
            finally:
                with self.lock:
                    self.in_flight[model] -= 1
            if step.raw is not None:
                return Response(step.raw, status_code=step.status, headers=step.headers, media_type="text/html")
            if step.status != 200:
                error = {"error": {"message": step.content, "type": "test_error"}}
                return JSONResponse(error, status_code=step.status, headers=step.headers)
            completion = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": step.content}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": step.prompt_tokens,
                    "completion_tokens": step.completion_tokens,
                    "total_tokens": step.prompt_tokens + step.completion_tokens,
                },
            }
            return JSONResponse(completion, headers=step.headers)

        return app


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    """The scripted server, on a free 127.0.0.1 port, running in a background thread for the whole module."""
    state = ScriptedServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(state.app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    state.url = f"http://127.0.0.1:{port}/v1"
    yield state
    uv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def make_teacher(url: str, model: str, **kw: Any) -> HTTPTeacher:
    """A teacher with test-sized waits unless a test says otherwise."""
    kw.setdefault("max_backoff_s", 0.05)
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("max_attempts", 5)
    return HTTPTeacher(url, model, **kw)


PROMPT = TeacherPrompt(system="You are a careful annotator.", text="Describe the clip.")


class QA(BaseModel):
    question: str
    answer: str


QA_LIST = TypeAdapter(list[QA])


# --- retries ------------------------------------------------------------------------------------------------------


def _waits(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The sleeps the teacher chose before each retry, from its retry log line (what it waits, not a stopwatch)."""
    return [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"retrying in ([0-9.]+)s", r.getMessage())) is not None
    ]


@pytest.mark.parametrize(("retry_after", "wait"), [("0", 0.0), ("1", 1.0)])
async def test_429_waits_for_retry_after_then_succeeds(
    server: ScriptedServer, retry_after: str, wait: float, caplog: pytest.LogCaptureFixture
) -> None:
    # Without Retry-After the first backoff would be 0.5-1.0 s: the server's value is used instead, exactly.
    caplog.set_level(logging.WARNING, logger="videoqa.synth.http_teacher")
    model = server.plan(Step(429, "slow down", headers={"Retry-After": retry_after}), Step(content="a red ball rolls"))
    async with make_teacher(server.url, model, max_backoff_s=5.0) as teacher:
        assert await teacher.generate(PROMPT) == "a red ball rolls"
    assert len(server.requests(model)) == 2
    assert _waits(caplog) == [wait]
    assert (teacher.usage.requests, teacher.usage.retries, teacher.usage.failures) == (2, 1, 0)


async def test_retry_after_is_capped_by_max_backoff(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="videoqa.synth.http_teacher")
    model = server.plan(Step(503, "overloaded", headers={"Retry-After": "30"}), Step(content="fine"))
    async with make_teacher(server.url, model, max_backoff_s=0.2) as teacher:
        assert await teacher.generate(PROMPT) == "fine"
    assert len(server.requests(model)) == 2
    assert _waits(caplog) == [0.2]  # it waits the cap, not the server's 30 s


async def test_server_errors_are_retried_then_succeed(server: ScriptedServer) -> None:
    model = server.plan(Step(500, "boom"), Step(502, "bad gateway"), Step(content="third time lucky"))
    async with make_teacher(server.url, model) as teacher:
        assert await teacher.generate(PROMPT) == "third time lucky"
    assert len(server.requests(model)) == 3
    assert teacher.usage == TeacherUsage(requests=3, retries=2, prompt_tokens=10, completion_tokens=5)


@pytest.mark.parametrize("status", [408, 409, 429, 504])
async def test_transient_statuses_are_retried(server: ScriptedServer, status: int) -> None:
    model = server.plan(Step(status, "try again"), Step(content="ok"))
    async with make_teacher(server.url, model) as teacher:
        assert await teacher.generate(PROMPT) == "ok"
    assert len(server.requests(model)) == 2
    assert teacher.usage.retries == 1


async def test_slow_reply_times_out_and_is_retried(server: ScriptedServer) -> None:
    model = server.plan(Step(content="too late", delay=2.0), Step(content="in time"))
    async with make_teacher(server.url, model, timeout_s=0.3) as teacher:
        assert await teacher.generate(PROMPT) == "in time"  # gave up on the slow reply instead of waiting it out
    assert len(server.requests(model)) == 2
    assert (teacher.usage.requests, teacher.usage.retries) == (2, 1)


async def test_malformed_200_body_is_retried(server: ScriptedServer) -> None:
    model = server.plan(Step(raw="<html>502 from a proxy</html>"), Step(content="real answer"))
    async with make_teacher(server.url, model) as teacher:
        assert await teacher.generate(PROMPT) == "real answer"
    assert len(server.requests(model)) == 2


async def test_connection_refused_is_retried_then_raises() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with make_teacher(f"http://127.0.0.1:{port}/v1", "nobody", max_attempts=3) as teacher:
        with pytest.raises(TeacherError, match="ConnectError") as info:
            await teacher.generate(PROMPT)
    assert info.value.attempts == 3
    assert (teacher.usage.requests, teacher.usage.retries, teacher.usage.failures) == (3, 2, 1)


async def test_always_500_raises_after_max_attempts(server: ScriptedServer) -> None:
    model = server.plan(Step(500, "engine crashed"))
    async with make_teacher(server.url, model, max_attempts=3) as teacher:
        with pytest.raises(TeacherError) as info:
            await teacher.generate(PROMPT)
    message = str(info.value)
    assert "500" in message and "engine crashed" in message and "3 attempt" in message
    assert (info.value.status, info.value.attempts) == (500, 3)
    assert len(server.requests(model)) == 3
    assert (teacher.usage.requests, teacher.usage.retries, teacher.usage.failures) == (3, 2, 1)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_errors_are_not_retried(server: ScriptedServer, status: int) -> None:
    model = server.plan(Step(status, "model 'gpt-9' does not exist"), Step(content="never reached"))
    async with make_teacher(server.url, model) as teacher:
        with pytest.raises(TeacherError) as info:
            await teacher.generate(PROMPT)
    assert str(status) in str(info.value) and "model 'gpt-9' does not exist" in str(info.value)
    assert info.value.status == status
    assert len(server.requests(model)) == 1
    assert (teacher.usage.requests, teacher.usage.retries, teacher.usage.failures) == (1, 0, 1)


# --- concurrency, accounting, request shape -------------------------------------------------------------------------


async def test_concurrency_limit_is_respected(server: ScriptedServer) -> None:
    model = server.plan(Step(content="ok", delay=0.15))
    async with make_teacher(server.url, model, concurrency=3) as teacher:
        replies = await asyncio.gather(*(teacher.generate(PROMPT) for _ in range(12)))
    assert replies == ["ok"] * 12
    assert len(server.requests(model)) == 12
    assert 2 <= server.max_in_flight[model] <= 3  # bounded, and the bound is actually used


async def test_usage_tokens_and_cost_are_summed(server: ScriptedServer) -> None:
    model = server.plan(Step(content="caption", prompt_tokens=1000, completion_tokens=200))
    async with make_teacher(
        server.url,
        model,
        api_key="sk-test",
        price_prompt_per_mtok=2.5,
        price_completion_per_mtok=10.0,
        temperature=0.3,
        max_tokens=77,
    ) as teacher:
        for _ in range(3):
            assert await teacher.generate(PROMPT) == "caption"
    usage = teacher.usage.as_dict()
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["requests"]) == (3000, 600, 3)
    assert usage["cost_usd"] == pytest.approx(3000 / 1e6 * 2.5 + 600 / 1e6 * 10.0)
    seen = server.requests(model)[0]
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert (seen.body["model"], seen.body["temperature"], seen.body["max_tokens"]) == (model, 0.3, 77)
    assert seen.body["messages"] == [
        {"role": "system", "content": PROMPT.system},
        {"role": "user", "content": PROMPT.text},
    ]


async def test_no_authorization_header_without_api_key(server: ScriptedServer) -> None:
    model = server.plan(Step(content="ok"))
    async with make_teacher(server.url, model) as teacher:
        await teacher.generate(PROMPT)
    assert "authorization" not in server.requests(model)[0].headers


async def test_frames_arrive_as_low_detail_jpeg_data_urls(server: ScriptedServer) -> None:
    colours = [(200, 30, 30), (30, 30, 200)]
    frames = [np.full((48, 64, 3), c, dtype=np.uint8) for c in colours]
    model = server.plan(Step(content="two frames"))
    async with make_teacher(server.url, model) as teacher:
        await teacher.generate(TeacherPrompt(system="sys", text="What colours?", frames=frames))
    messages = server.requests(model)[0].body["messages"]
    assert messages[0] == {"role": "system", "content": "sys"}
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[-1]["text"] == "What colours?"
    for part, colour in zip(parts[:2], colours, strict=True):
        assert part["image_url"]["detail"] == "low"
        url = part["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert image.format == "JPEG" and image.size == (64, 48)
        assert np.abs(np.asarray(image.convert("RGB")).reshape(-1, 3).mean(0) - colour).max() < 8


async def test_video_arrives_as_one_video_url_part(server: ScriptedServer, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(range(256)) * 40)
    model = server.plan(Step(content="a video"))
    async with make_teacher(server.url, model) as teacher:
        await teacher.generate(TeacherPrompt(system="", text="Describe.", video=video))
    messages = server.requests(model)[0].body["messages"]
    assert [m["role"] for m in messages] == ["user"]  # an empty system prompt is left out
    video_part, text_part = messages[0]["content"]
    assert video_part["type"] == "video_url"
    url = video_part["video_url"]["url"]
    assert url.startswith("data:video/mp4;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == video.read_bytes()
    assert text_part == {"type": "text", "text": "Describe."}


@pytest.mark.parametrize(
    "prompt",
    [
        TeacherPrompt(system="", text="x", frames=[np.zeros((8, 8, 3), dtype=np.float32)]),
        TeacherPrompt(system="", text="x", frames=[np.zeros((8, 8), dtype=np.uint8)]),
        TeacherPrompt(system="", text="x", frames=[np.zeros((8, 8, 3), dtype=np.uint8)], video=Path("a.mp4")),
    ],
    ids=["float-frames", "grey-frames", "frames-and-video"],
)
async def test_bad_prompts_fail_before_any_request(prompt: TeacherPrompt) -> None:
    async with HTTPTeacher("http://127.0.0.1:9/v1", "unused") as teacher:
        with pytest.raises(ValueError):
            await teacher.generate(prompt)
    assert teacher.usage.requests == 0


# --- JSON replies -------------------------------------------------------------------------------------------------


async def test_invalid_json_gets_a_repair_turn(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="videoqa.synth.http_teacher")
    bad = 'Sure! Here it is: {"question": "why?", }'
    good = 'Fixed:\n```json\n[{"question": "why?", "answer": "because"}]\n```'
    model = server.plan(Step(content=bad), Step(content=good))
    async with make_teacher(server.url, model, max_backoff_s=5.0) as teacher:
        result = await teacher.generate_json(PROMPT, QA_LIST.validate_python)
    assert _waits(caplog) == [0.0]  # an invalid reply is repaired at once, without backoff
    assert result == [QA(question="why?", answer="because")]
    assert (teacher.usage.invalid_json, teacher.usage.retries, teacher.usage.failures) == (1, 1, 0)
    assert teacher.usage.completion_tokens == 10  # the rejected reply's tokens were paid for too
    first, second = (s.body["messages"] for s in server.requests(model))
    assert len(first) == 2 and second[:2] == first
    assert second[2] == {"role": "assistant", "content": bad}
    repair = second[3]
    assert repair["role"] == "user"
    assert "not valid JSON" in repair["content"]
    assert "Expecting property name enclosed in double quotes" in repair["content"]  # the decoder's own words
    assert "only the corrected, valid JSON" in repair["content"]


async def test_validation_failure_gets_a_repair_turn_with_the_error(server: ScriptedServer) -> None:
    wrong_shape = '{"question": "what colour?"}'
    right = 'Here is the list: [{"question": "what colour?", "answer": "red"}] Hope it helps [1].'
    model = server.plan(Step(content=wrong_shape), Step(content=right))
    async with make_teacher(server.url, model) as teacher:
        result = await teacher.generate_json(PROMPT, QA_LIST.validate_python)
    assert result == [QA(question="what colour?", answer="red")]
    assert teacher.usage.invalid_json == 1
    repair = server.requests(model)[1].body["messages"][-1]["content"]
    assert "did not have the required structure" in repair
    assert "ValidationError" in repair and "list" in repair  # pydantic says it wanted a list


async def test_errors_and_repairs_share_the_attempt_budget(server: ScriptedServer) -> None:
    model = server.plan(Step(500, "hiccup"), Step(content="not json at all"), Step(content='{"ok": true}'))
    async with make_teacher(server.url, model, max_attempts=3) as teacher:
        assert await teacher.generate_json(PROMPT, dict) == {"ok": True}
    seen = [s.body["messages"] for s in server.requests(model)]
    assert [len(m) for m in seen] == [2, 2, 4]  # the 500 is resent as is; the bad reply gets a repair turn
    assert "no JSON object or array found" in seen[2][3]["content"]
    assert (teacher.usage.requests, teacher.usage.retries, teacher.usage.invalid_json) == (3, 2, 1)


async def test_never_valid_json_raises(server: ScriptedServer) -> None:
    model = server.plan(Step(content="I would rather describe it in words."))
    async with make_teacher(server.url, model, max_attempts=3) as teacher:
        with pytest.raises(TeacherError, match="no valid JSON reply after 3 attempt"):
            await teacher.generate_json(PROMPT, QA_LIST.validate_python)
    seen = server.requests(model)
    assert len(seen) == 3
    assert len(seen[-1].body["messages"]) == 2 + 2 * 2  # two repair exchanges appended
    assert (teacher.usage.invalid_json, teacher.usage.failures) == (3, 1)


def _needs_key(value: Any) -> str:
    return value["caption"]


async def test_validator_key_error_counts_as_invalid(server: ScriptedServer) -> None:
    model = server.plan(Step(content='{"text": "x"}'), Step(content='{"caption": "a dog runs"}'))
    async with make_teacher(server.url, model) as teacher:
        assert await teacher.generate_json(PROMPT, _needs_key) == "a dog runs"
    assert teacher.usage.invalid_json == 1
    assert "KeyError" in server.requests(model)[1].body["messages"][-1]["content"]


# --- JSON extraction (pure) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2]\n", [1, 2]),
        ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('```\n[{"q": "x"}]\n```', [{"q": "x"}]),
        ('Intro text.\n```json\n{"a": 1}\n```\nOutro.', {"a": 1}),
        ('Here you go: {"a": {"b": "}"}} -- enjoy!', {"a": {"b": "}"}}),
        ('See note [1] below. [{"q": "why"}] Thanks', [{"q": "why"}]),
        ('Answer: [not json] then {"ok": true}', {"ok": True}),
    ],
)
def test_extract_json_tolerates_wrapping(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("no json here", "no JSON object or array found"),
        ('{"a": 1,', "Expecting property name"),
    ],
)
def test_extract_json_reports_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        extract_json(text)


def test_usage_as_dict_round_trips() -> None:
    usage = TeacherUsage(requests=2, retries=1, prompt_tokens=5, cost_usd=0.5)
    assert json.loads(json.dumps(usage.as_dict())) == {
        "requests": 2,
        "retries": 1,
        "failures": 0,
        "invalid_json": 0,
        "prompt_tokens": 5,
        "completion_tokens": 0,
        "cost_usd": 0.5,
    }
