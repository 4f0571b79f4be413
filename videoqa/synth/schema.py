"""What flows through the synth pipeline: a video's context, caption tasks, QA items, and the
LLaVA-Video-178K records written from them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, Field, field_validator

LETTERS = "ABCDEFGH"


@dataclass
class VideoContext:
    id: str
    """The record's video path, relative to the source root (also the stable id for sharding/resume)."""
    path: Path
    duration: float
    frames: np.ndarray
    """uint8 RGB [F, H, W, 3] at 1 fps (the paper's captioning rate)."""
    timestamps: list[float]
    truth: dict | None = None
    """Ground-truth timeline (procedural videos only)."""


@dataclass
class CaptionTask:
    level: int
    """1: a 10 s clip; 2: a 30 s summary; 3: the whole video."""
    start: float
    end: float
    frames: np.ndarray | None = None
    """The clip's 1 fps frames (level 1 only) [F, H, W, 3]."""
    timestamps: list[float] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    """Earlier descriptions the teacher must continue from (see captions.recurrent_captions)."""


@dataclass
class Caption:
    level: int
    start: float
    end: float
    text: str


class QAItem(BaseModel):
    """One question of one type; `short` and `distractors` make its multiple-choice form."""

    type: str = Field(description="One of the 16 question types (the paper's 'Dimension').")
    question: str = Field(min_length=3)
    answer: str = Field(min_length=1, description="Open-ended answer, a sentence.")
    short: str = Field(min_length=1, description="The correct option for multiple choice, a few words.")
    distractors: list[str] = Field(min_length=1, max_length=7, description="Plausible wrong options.")

    @field_validator("distractors")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len({d.strip().lower() for d in v}) != len(v):
            raise ValueError(f"distractors must be distinct, got {v}")
        return v


class Teacher(Protocol):
    """Writes captions and QA for one video: a model behind an HTTP API, or the procedural oracle."""

    name: str

    async def caption(self, video: VideoContext, task: CaptionTask) -> str: ...

    async def questions(self, video: VideoContext, caption: str, types: list[str]) -> list[QAItem]: ...

    def usage(self) -> dict: ...


def video_records(video_id: str, source: str, captions: list[Caption], qa: list[QAItem]) -> dict[str, list[dict]]:
    """caption / open_ended / multiple_choice records plus the per-level captions, for one video.

    Multiple choice: "<image>\\n{question}\\nOptions:\\nA. ...", answered "C. 7" (paper section 3.2); the
    answer's letter comes from a shuffle seeded by the record id, so letters are uniform and reproducible.
    """
    stem = Path(video_id).with_suffix("").as_posix().replace("/", "_")
    base = {"data_source": source, "video": video_id}
    final = [c for c in captions if c.level == 3]
    out: dict[str, list[dict[str, Any]]] = {"caption": [], "open_ended": [], "multiple_choice": [], "levels": []}
    if final:
        out["caption"].append(
            {
                "id": f"{stem}_cap",
                "conversations": [
                    {"from": "human", "value": "<image>\nPlease describe this video in detail."},
                    {"from": "gpt", "value": final[-1].text},
                ],
                **base,
            }
        )
    out["levels"] = [
        {
            "id": f"{stem}_l{c.level}_{c.start:g}",
            "level": c.level,
            "start": c.start,
            "end": c.end,
            "text": c.text,
            **base,
        }
        for c in captions
    ]
    for i, q in enumerate(qa):
        out["open_ended"].append(
            {
                "id": f"{stem}_oe_{i}",
                "question_type": q.type,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{q.question}"},
                    {"from": "gpt", "value": q.answer},
                ],
                **base,
            }
        )
        rid = f"{stem}_mc_{i}"
        choices = [q.short, *q.distractors]
        random.Random(rid).shuffle(choices)
        letter = LETTERS[choices.index(q.short)]
        options = "\n".join(f"{LETTERS[j]}. {c}" for j, c in enumerate(choices))
        out["multiple_choice"].append(
            {
                "id": rid,
                "question_type": q.type,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{q.question}\nOptions:\n{options}"},
                    {"from": "gpt", "value": f"{letter}. {q.short}"},
                ],
                **base,
            }
        )
    return out
