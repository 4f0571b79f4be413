"""The learnability ladder's task generators (videoqa/training/experiments/ladder.py) label what they show: a
wrong label would make a rung look unlearnable. No training here; the ladder's runs are benchmarks."""

from __future__ import annotations

import random

import numpy as np
import pytest

from videoqa.model.config import LlavaVideoConfig
from videoqa.model.layout import VideoLayout, num_video_tokens
from videoqa.model.prompt import VIDEO_TOKEN
from videoqa.model.tokenizer import build_tokenizer
from videoqa.synth.world import COLOURS
from videoqa.training.experiments.ladder import COLOUR_NAMES, Frames, Tokens


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(seed=0)


def _asked(tokenizer, ids: list[int]) -> str:
    """The colour the question names, read back from the decoded prompt."""
    text = tokenizer.decode(ids)
    return text.split("Does a ", 1)[1].split(" object appear", 1)[0]


@pytest.mark.parametrize(("n", "only"), [(20, None), (160, None), (20, "blue")])
def test_tokens_answer_says_whether_the_asked_colour_is_among_the_tokens(tokenizer, n: int, only: str | None) -> None:
    task = Tokens(tokenizer, n)
    prefix = len(tokenizer.encode("<|im_start|>user\n"))
    yes = 0
    for i in range(300):
        ex = task.example(random.Random(i), only=only)
        content = ex.input_ids[prefix : prefix + n]
        shown = {c for c in COLOUR_NAMES if task.colour_ids[c] in content}
        asked = _asked(tokenizer, ex.input_ids)
        assert asked == (only or asked)
        assert 1 <= len(shown) <= 4
        assert sum(t in task.colour_ids.values() for t in content) == len(shown)  # distinct colours
        assert ex.present == (asked in shown)
        assert ex.answer == (task.yes if asked in shown else task.no)
        yes += ex.present
    assert 100 < yes < 200  # balanced: the prior alone scores about half


def test_tokens_aux_question_is_answered_by_the_one_colour_shown(tokenizer) -> None:
    task = Tokens(tokenizer, 20)
    prefix = len(tokenizer.encode("<|im_start|>user\n"))
    for i in range(100):
        ex = task.example(random.Random(i), aux=True)
        shown = [c for c in COLOUR_NAMES if task.colour_ids[c] in ex.input_ids[prefix : prefix + 20]]
        assert "Which colour is the object?" in tokenizer.decode(ex.input_ids)
        assert len(shown) == 1 and tokenizer.decode([ex.answer]) == shown[0]


@pytest.mark.parametrize("only", [None, "blue"])
def test_frames_answer_says_whether_a_frame_shows_the_asked_colour(tokenizer, only: str | None) -> None:
    config = _config(tokenizer)
    task = Frames(tokenizer, config, frames=4, bank=4, seed=0)
    count = num_video_tokens(config.layout, 4, config.grid)
    yes = 0
    for i in range(60):
        ex = task.example(random.Random(i), only=only)
        assert ex.input_ids.count(config.video_token_id) == count
        rgb = ((ex.frames.permute(0, 2, 3, 1).numpy() * 0.5 + 0.5) * 255).round()  # [F, S, S, 3], mean = std = 0.5
        # Each frame shows exactly one object colour (the object's inside keeps its exact colour through resizing).
        per_frame = [[c for c in COLOUR_NAMES if (np.abs(f - COLOURS[c]).max(-1) <= 2).sum() >= 20] for f in rgb]
        assert all(len(cs) == 1 for cs in per_frame), per_frame
        shown = {cs[0] for cs in per_frame}
        asked = _asked(tokenizer, ex.input_ids)
        assert asked == (only or asked)
        assert ex.present == (asked in shown)
        assert ex.answer == (task.yes if asked in shown else task.no)
        yes += ex.present
    assert 15 < yes < 45


def test_frames_aux_question_is_answered_by_the_colour_every_frame_shows(tokenizer) -> None:
    config = _config(tokenizer)
    task = Frames(tokenizer, config, frames=2, bank=4, seed=0)
    answered = set()
    for i in range(30):
        ex = task.example(random.Random(i), aux=True)
        assert "Which colour is the object?" in tokenizer.decode(ex.input_ids)
        rgb = ((ex.frames.permute(0, 2, 3, 1).numpy() * 0.5 + 0.5) * 255).round()  # [F, S, S, 3]
        per_frame = [[c for c in COLOUR_NAMES if (np.abs(f - COLOURS[c]).max(-1) <= 2).sum() >= 20] for f in rgb]
        (colour,) = {cs[0] for cs in per_frame if len(cs) == 1}
        assert all(len(cs) == 1 for cs in per_frame)
        assert tokenizer.decode([ex.answer]) == colour
        answered.add(colour)
    assert len(answered) >= 4  # the asked colour varies


def _config(tokenizer) -> LlavaVideoConfig:
    """The tiny tower geometry the frames rung renders for (126 px, patch 14), with this tokenizer's video token."""
    return LlavaVideoConfig(
        vision_config={"model_type": "siglip_vision_model", "image_size": 126, "patch_size": 14},
        text_config={"model_type": "qwen2"},
        video_layout=VideoLayout().to_dict(),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
    )
