"""The synth pipeline's HTTP teacher against our own gateway (OpenAI-compatible chat with a video), end to end.

The gateway serves a random tiny checkpoint here, so captions are noise and its QA is not JSON: what this
checks is the wiring (videos sent as data URLs reach the engine, token accounting, retries-then-failure on
invalid JSON recorded as the video's outcome, nothing crashes, a rerun retries the failure)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from videoqa.synth.http_teacher import HTTPTeacher, TeacherPrompt
from videoqa.synth.pipeline import RunConfig, finalize, run
from videoqa.synth.teacher import LLMTeacher
from videoqa.synth.world import WorldConfig, make_scene, render_video


def test_the_gateway_serves_as_a_synth_teacher(start_gateway, tmp_path: Path) -> None:
    gw = start_gateway()
    model = httpx.get(f"{gw.url}/v1/models", timeout=30).json()["data"][0]["id"]
    world = WorldConfig(min_seconds=12, max_seconds=14, max_shots=2)
    video = render_video(make_scene(901, world), tmp_path / "src" / "clip.mp4", world)

    async def go() -> tuple[str, dict, dict]:
        async with HTTPTeacher(f"{gw.url}/v1", model, max_attempts=2, max_tokens=16, max_backoff_s=0.1) as client:
            text = await client.generate(TeacherPrompt("You describe videos.", "What happens?", video=video))
            cfg = RunConfig(source=tmp_path / "src", out=tmp_path / "out", selection=None, concurrency=1)
            counts = await run(cfg, LLMTeacher(client, send_video=True))
            return text, counts, client.usage.as_dict()

    text, counts, usage = asyncio.run(go())
    assert text  # noise from a random model (here often newlines), but generated from the video
    assert counts == {"failed": 1}  # captions came back; the random model's QA is never valid JSON
    outcome = json.loads(next((tmp_path / "out" / "work").glob("*.json")).read_text())
    assert "TeacherError" in outcome["error"] and "JSON" in outcome["error"]
    # 1 direct call + 2 level-1 captions + 1 level-3 + 2 QA attempts (the second one a repair turn)
    assert usage["requests"] == 6 and usage["invalid_json"] == 2 and usage["failures"] == 1
    assert usage["prompt_tokens"] > 6 * 100  # each carried the video's visual tokens
    stats = finalize(tmp_path / "out")
    assert stats["failures"][0]["video"] == "clip.mp4"
