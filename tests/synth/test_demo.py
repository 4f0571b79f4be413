"""The procedural world + oracle: records in the 178K format whose answers agree with what the pixels show
(checked by decoding the videos and tracking colours, not by re-reading the ground truth)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from videoqa.cli import app
from videoqa.synth.oracle import questions
from videoqa.synth.world import COLOURS, WorldConfig, make_scene
from videoqa.video import SamplingSpec, sample_frames


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["synth", "demo", "--videos", "6", "--seed", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _load(demo: Path, kind: str) -> list[dict]:
    return json.loads((demo / f"procedural_v0_{kind}.json").read_text())


def _centroids(frame: np.ndarray) -> dict[str, tuple[float, float]]:
    """Where each palette colour is in a decoded frame (lossy coding: match within a tolerance)."""
    found = {}
    for name, rgb in COLOURS.items():
        mask = np.abs(frame.astype(int) - np.array(rgb)).max(axis=-1) < 40
        if mask.sum() > 30:
            ys, xs = np.nonzero(mask)
            found[name] = (xs.mean(), ys.mean())
    return found


def _observed(video: Path) -> dict[str, list[tuple[float, float, float]]]:
    got = sample_frames(video, SamplingSpec(fps=2.0, max_frames=64, policy="exact", size=None))
    tracks: dict[str, list[tuple[float, float, float]]] = {}
    for frame, t in zip(got.frames, got.timestamps, strict=True):
        for colour, (x, y) in _centroids(frame).items():
            tracks.setdefault(colour, []).append((t, x, y))
    return tracks


def _direction(track: list[tuple[float, float, float]]) -> str:
    (_, x0, y0), (_, x1, y1) = track[0], track[-1]
    dx, dy = x1 - x0, y1 - y0
    return ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")


def test_records_have_the_178k_format_and_the_data_mix(demo: Path) -> None:
    for kind in ("caption", "open_ended", "multiple_choice"):
        recs = _load(demo, kind)
        assert recs, kind
        for r in recs:
            assert set(r) >= {"id", "conversations", "data_source", "video"}
            human, gpt = r["conversations"]
            assert human["from"] == "human" and human["value"].startswith("<image>\n") and gpt["from"] == "gpt"
            assert (demo / r["video"]).is_file() and not Path(r["video"]).is_absolute()
    for r in _load(demo, "multiple_choice"):
        assert "\nOptions:\nA. " in r["conversations"][0]["value"]
        assert re.fullmatch(r"[ABCD]\. \S+", r["conversations"][1]["value"])
    import yaml

    mix = yaml.safe_load((demo / "data_mix.yaml").read_text())["datasets"]
    assert {m["json_path"] for m in mix} == {
        f"procedural_v0_{k}.json" for k in ("caption", "open_ended", "multiple_choice")
    }
    assert {r["question_type"] for r in _load(demo, "multiple_choice")} == {
        "Count",
        "Object Direction",
        "Description-Object",
    }


def test_multiple_choice_answers_agree_with_the_pixels(demo: Path) -> None:
    checked = Counter()
    for r in _load(demo, "multiple_choice"):
        tracks = _observed(demo / r["video"])
        question = r["conversations"][0]["value"].split("\n")[1]
        answer = r["conversations"][1]["value"].split(". ", 1)[1]
        if r["question_type"] == "Count":
            assert int(answer) == len(tracks), (question, tracks.keys())
        elif r["question_type"] == "Object Direction":
            colour = question.split("the ")[1].split(" ")[0]
            assert _direction(tracks[colour]) == answer, question
        else:
            direction = question.rsplit(" ", 1)[1].rstrip("?")
            assert _direction(tracks[answer]) == direction, question
        checked[r["question_type"]] += 1
    assert min(checked.values()) >= 1


def test_captions_name_every_object_seen(demo: Path) -> None:
    for r in _load(demo, "caption"):
        text = r["conversations"][1]["value"]
        for colour in _observed(demo / r["video"]):
            assert f"a {colour} " in text


def test_same_seed_same_scene_and_balanced_answer_letters() -> None:
    assert make_scene(5).timeline() == make_scene(5).timeline()
    assert make_scene(5).timeline() != make_scene(6).timeline()
    letters = Counter()
    for seed in range(120):
        for q in questions(make_scene(seed)):
            letters["ABCD"[q["choices"].index(q["answer"])]] += 1
    total = sum(letters.values())
    assert all(letters[c] > total * 0.15 for c in "ABCD"), letters


def test_world_config_errors_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match="min_seconds"):
        WorldConfig(min_seconds=10, max_seconds=5)
    with pytest.raises(ValueError, match="too small"):
        WorldConfig(width=32)
