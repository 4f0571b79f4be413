"""`videoqa eval` sizes the engine from the checkpoint: context from its layout and the frame count, dtype from
its config.json."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from videoqa.model.chat import ChatFormat
from videoqa.model.config import LlavaVideoConfig
from videoqa.model.layout import VideoLayout, num_video_tokens
from videoqa.training.evaluate import ContextTooShortError, checkpoint_dtype, evaluate_engine, model_len_for
from videoqa.video.testing import make_test_video

# Pool stride 1 on the tiny 9x9 grid: 81 tokens + 9 newlines per frame, so 48 frames are 4320 video tokens.
WIDE = VideoLayout(pool_stride=1)
FRAMES = 48


def _data(tmp: Path) -> Path:
    make_test_video(tmp / "clip.mp4", seconds=3, fps=8, size=(64, 48))
    record = {
        "id": "q0",
        "video": "clip.mp4",
        "question_type": "Description-Scene",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is the clip?\nOptions:\nA. a\nB. b\nC. c\nD. d"},
            {"from": "gpt", "value": "A."},
        ],
    }
    (tmp / "eval.json").write_text(json.dumps([record]))
    return tmp / "eval.json"


def test_context_follows_layout_and_frames_and_dtype_the_checkpoint(
    tmp_path: Path, make_tiny_checkpoint: Callable[..., Path]
) -> None:
    ckpt = make_tiny_checkpoint(WIDE)
    cfg, chat = LlavaVideoConfig.from_pretrained(ckpt), ChatFormat.from_pretrained(ckpt)
    records = json.loads(_data(tmp_path).read_text())
    need = model_len_for(cfg, chat, records, FRAMES, max_new_tokens=48)
    assert need > num_video_tokens(WIDE, FRAMES, cfg.grid) == 4320 > 4096
    assert model_len_for(cfg, chat, records, 8, max_new_tokens=48) < need - 40 * 90  # 40 frames fewer, 90 each
    with pytest.raises(ContextTooShortError, match=r"pass --frames (\d+) or fewer"):
        model_len_for(cfg, chat, records, 100, max_new_tokens=48)  # 9000 video tokens > the LM's 8192
    assert checkpoint_dtype(cfg) == "float32"
    cfg.dtype = "bfloat16"
    assert checkpoint_dtype(cfg) == "bfloat16"


@pytest.mark.engine
def test_eval_runs_a_checkpoint_whose_prompt_needs_more_than_4096_tokens(
    tmp_path: Path, make_tiny_checkpoint: Callable[..., Path]
) -> None:
    ckpt = make_tiny_checkpoint(WIDE)
    result = asyncio.run(
        evaluate_engine(ckpt, _data(tmp_path), num_frames=FRAMES, max_open_ended=0, likelihood=False, concurrency=1)
    )
    assert result["overall"]["n"] == 1  # answered through vLLM, not refused for length
    assert result["setup"]["max_model_len"] > 4096 and result["setup"]["frames"] == FRAMES
    assert result["setup"]["dtype"] == "float32"
