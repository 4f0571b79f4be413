"""`videoqa synth run` end to end against a real local teacher server that injects faults: resumable after
SIGKILL (same final records as an uninterrupted run), shardable, failures recorded and retried, filters."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from videoqa.cli import app
from videoqa.synth.http_teacher import HTTPTeacher
from videoqa.synth.pipeline import RunConfig, filter_qa, finalize, list_source, run
from videoqa.synth.schema import QAItem
from videoqa.synth.teacher import LLMTeacher
from videoqa.synth.world import WorldConfig, make_scene, render_video

WORLD = WorldConfig(min_seconds=12, max_seconds=35, max_shots=3)


class FaultyTeacher:
    """A chat-completions server whose replies are a pure function of the prompt (so reruns agree), and which
    fails the first attempt of some prompts: 500, 429 + Retry-After, or (for QA) invalid JSON."""

    def __init__(self) -> None:
        self.attempts: Counter = Counter()
        self.faults: Counter = Counter()
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            user = body["messages"][1]["content"]
            text = user if isinstance(user, str) else next(p["text"] for p in user if p["type"] == "text")
            key = hashlib.sha1(text.encode()).hexdigest()
            with self.lock:
                self.attempts[key] += 1
                first = self.attempts[key] == 1
            await asyncio.sleep(0.03)
            qa = "JSON list" in text
            h = int(key[:6], 16)
            if first and h % 5 == 0:
                self.faults["500"] += 1
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
            if first and h % 5 == 1:
                self.faults["429"] += 1
                return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "0"})
            if qa and len(body["messages"]) == 2 and h % 2 == 0:
                self.faults["invalid json"] += 1
                content = "Sure! Here are the questions: [{'Dimension': oops"
            elif qa:
                content = json.dumps(
                    [
                        {
                            "Dimension": "Count",
                            "Question": "How many objects are there?",
                            "Answer": f"{h % 4 + 1}.",
                            "Short": str(h % 4 + 1),
                            "Distractors": ["5", "6", "7"],
                        },
                        {
                            "Dimension": "Binary",
                            "Question": "How many objects are there here?",
                            "Answer": "x",
                            "Short": "x",
                            "Distractors": ["y"],
                        },  # near-duplicate of the first: filtered
                        {
                            "Dimension": "Causal",
                            "Question": "Why does the red square stop?",
                            "Answer": "The video does not specify why.",
                            "Short": "unknown",
                            "Distractors": ["a", "b", "c"],
                        },  # a non-answer: filtered
                    ]
                )
            else:
                content = f"caption {key[:10]}"
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                }
            )

        return api


@pytest.fixture(scope="module")
def teacher_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(FaultyTeacher().app(), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "teacher server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("source")
    for i in range(8):
        render_video(make_scene(500 + i, WORLD), src / "clips" / f"v{i}.mp4", WORLD)
    (src / "clips" / "broken.mp4").write_bytes(os.urandom(5000))  # fails every time: recorded, never fatal
    return src


def _records(out: Path) -> dict[str, str]:
    # the records; usage (requests, retries, cost) is accounting that differs between runs by nature
    return {p.name: p.read_text() for p in sorted(out.glob("synth_v0_*.json"))}


def _cli(source: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "videoqa.cli",
        "synth",
        "run",
        "--source",
        str(source),
        "--out",
        str(out),
        "--teacher-url",
        url,
        "--teacher-model",
        "faulty",
        "--no-selection",
        "--concurrency",
        "2",
        *extra,
    ]


def test_a_killed_run_continues_to_the_same_records_as_an_uninterrupted_one(
    source: Path, teacher_url: str, tmp_path: Path
) -> None:
    whole = tmp_path / "whole"
    done = subprocess.run(_cli(source, whole, teacher_url), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(_cli(source, resumed, teacher_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((resumed / "work").glob("*.json"))) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    at_kill = len(list((resumed / "work").glob("*.json")))
    assert at_kill < 9  # killed half way: some videos were not done
    again = subprocess.run(_cli(source, resumed, teacher_url), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]

    assert _records(resumed) == _records(whole)
    recs = json.loads((whole / "synth_v0_open_ended.json").read_text())
    assert len({r["video"] for r in recs}) == 8 and len(recs) == 8  # one Count question each: filters dropped 2
    assert not list((resumed / "work").glob("*.tmp*"))
    stats = json.loads((whole / "stats.json").read_text())
    assert stats["videos"] == {"failed": 1, "kept": 8}
    assert stats["failures"][0]["video"] == "clips/broken.mp4" and "NotAVideoError" in stats["failures"][0]["error"]
    assert stats["qa_dropped"] == {"near-duplicate": 8, "non-answer": 8}
    assert {r["level"] for r in json.loads((whole / "synth_v0_caption_levels.json").read_text())} == {1, 2, 3}
    usage = json.loads((whole / "usage_shard0of1.json").read_text())
    assert usage["retries"] >= 1 and usage["invalid_json"] >= 1 and usage["failures"] == 0
    assert usage["prompt_tokens"] > 0 and usage["prompt_tokens"] % 100 == 0  # summed over the answered requests


def test_shards_split_the_source_and_merge_to_the_unsharded_result(source: Path, tmp_path: Path) -> None:
    ids = [v for v, _ in list_source(source)]
    from videoqa.synth.pipeline import in_shard

    parts = [{v for v in ids if in_shard(v, (i, 3))} for i in range(3)]
    assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)

    def go(out: Path, shard: tuple[int, int]) -> None:
        cfg = RunConfig(source=source, out=out, shard=shard, selection=None)
        from videoqa.synth.oracle import OracleTeacher

        asyncio.run(run(cfg, OracleTeacher()))

    for i in range(3):
        go(tmp_path / "sharded", (i, 3))
    result = CliRunner().invoke(app, ["synth", "merge", "--out", str(tmp_path / "sharded")])
    assert result.exit_code == 0, result.output
    go(tmp_path / "single", (0, 1))
    finalize(tmp_path / "single")
    assert _records(tmp_path / "sharded") == _records(tmp_path / "single")
    assert json.loads((tmp_path / "single" / "synth_v0_multiple_choice.json").read_text())


def test_the_llm_teacher_pipeline_in_process(source: Path, teacher_url: str, tmp_path: Path) -> None:
    async def go() -> dict:
        async with HTTPTeacher(teacher_url, "faulty", max_backoff_s=0.05) as client:
            cfg = RunConfig(source=source, out=tmp_path, selection=None, concurrency=3)
            return await run(cfg, LLMTeacher(client))

    assert asyncio.run(go()) == {"kept": 8, "failed": 1}


def test_filters_drop_non_answers_and_near_duplicates() -> None:
    def q(question: str, answer: str) -> QAItem:
        return QAItem(type="Count", question=question, answer=answer, short="1", distractors=["2"])

    kept, dropped = filter_qa(
        [
            q("How many cars pass by?", "Two."),
            q("How many cars pass by here?", "Two."),
            q("Why does it stop?", "The caption does not mention why."),
            q("What colour is the car?", "Red."),
        ]
    )
    assert [k.question for k in kept] == ["How many cars pass by?", "What colour is the car?"]
    assert dropped == Counter({"near-duplicate": 1, "non-answer": 1})


def test_run_errors_say_what_to_change(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(
        app, ["synth", "run", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", "3/2", "--oracle"]
    )
    assert r.exit_code != 0 and "0 <= i < n" in r.output
    r = runner.invoke(app, ["synth", "run", "--source", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "--oracle" in r.output
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        list_source(tmp_path / "missing")


class CountingTeacher:
    """The oracle teacher, counting its calls per video and failing every call for the videos in `fail`; its usage
    is the number of calls this instance answered (one "run" of spend)."""

    def __init__(self, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        from videoqa.synth.oracle import OracleTeacher

        self.inner, self.fail, self.calls = OracleTeacher(), fail, Counter()

    async def caption(self, video, task):  # noqa: ANN001, ANN201
        self.calls[video.id] += 1
        if video.id in self.fail:
            raise RuntimeError("teacher is down for this video")
        return await self.inner.caption(video, task)

    async def questions(self, video, caption, types):  # noqa: ANN001, ANN201
        self.calls[video.id] += 1
        return await self.inner.questions(video, caption, types)

    def usage(self) -> dict:
        return {"requests": sum(self.calls.values())}


def test_resume_skips_finished_videos_retries_failed_ones_and_adds_up_usage(source: Path, tmp_path: Path) -> None:
    ids = [v for v, path in list_source(source) if path.with_suffix(".json").is_file()][:3]
    small = tmp_path / "src"
    for v in ids:  # three of the shared videos, with their ground truth
        for suffix in (".mp4", ".json"):
            (small / v).parent.mkdir(parents=True, exist_ok=True)
            (small / v).with_suffix(suffix).write_bytes((source / v).with_suffix(suffix).read_bytes())
    cfg = RunConfig(source=small, out=tmp_path / "out", selection=None, concurrency=2)

    first = CountingTeacher(fail={ids[1]})
    assert asyncio.run(run(cfg, first)) == {"kept": 2, "failed": 1}
    assert set(first.calls) == set(ids) and first.calls[ids[1]] == 1  # the failing video stopped at its first call

    second = CountingTeacher()
    assert asyncio.run(run(cfg, second)) == {"kept": 1}
    assert set(second.calls) == {ids[1]}  # finished videos are not asked again; the failed one is retried
    assert second.calls[ids[1]] >= 2  # the whole video this time: its captions and then its questions

    third = CountingTeacher()
    assert asyncio.run(run(cfg, third)) == {} and not third.calls  # nothing left to do
    usage = json.loads((cfg.out / "usage_shard0of1.json").read_text())
    assert usage == {"requests": sum(first.calls.values()) + sum(second.calls.values())}  # spend adds up
