"""`make serve`'s embedded default (no model configured: the shipped demo checkpoint, in-process engine)
answers questions about procedural videos correctly through POST /v1/video/qa."""

from __future__ import annotations

import httpx
import pytest

from videoqa.synth.oracle import questions_from_truth
from videoqa.synth.world import WorldConfig, make_scene, render_video

pytestmark = pytest.mark.engine


def test_the_embedded_default_answers_questions_about_a_video_correctly(demo_gateway, tmp_path) -> None:
    gw = demo_gateway  # embedded mode, default checkpoint
    info = httpx.get(f"{gw.url}/v1/models", timeout=30).json()["data"][0]
    assert info["id"] == "demo_checkpoint"
    world = WorldConfig.preset("simple")
    right, answers = 0, []
    for seed in range(9100, 9106):
        scene = make_scene(seed, world)
        video = render_video(scene, tmp_path / f"{seed}.mp4", world)
        (q,) = questions_from_truth(scene, ["Description-Scene"])
        with video.open("rb") as f:
            r = httpx.post(
                f"{gw.url}/v1/video/qa",
                files={"file": ("v.mp4", f, "video/mp4")},
                data={"question": q.question, "max_tokens": "12"},
                timeout=300,
            )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["frames"] == 8  # the checkpoint's own frame count
        answers.append((q.short, body["answer"]))
        right += body["answer"].lower().startswith(q.short)
    assert right >= 5, answers
