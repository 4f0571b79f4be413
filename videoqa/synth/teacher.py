"""A model teacher behind any OpenAI-compatible chat API (GPT-4o, or a large model we serve ourselves): the
paper's captioning and QA prompts, on top of the HTTP client in http_teacher.py (retries, limits, accounting).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from videoqa.synth.http_teacher import HTTPTeacher, TeacherPrompt
from videoqa.synth.question_types import BY_NAME, QUESTION_TYPES
from videoqa.synth.schema import CaptionTask, QAItem, VideoContext

SYSTEM = "You are an expert video annotator. You describe only what the frames show, precisely and in order."

LEVEL_PROMPTS = {
    1: (
        "These frames were sampled at 1 frame per second from {start:.0f} s to {end:.0f} s of a video "
        "(timestamps: {stamps}). Describe in detail what happens in this clip: the scene, the objects and people, "
        "their appearance, positions, movements and any changes, and how the camera moves. Continue the story "
        "told so far without repeating it.\n\nSo far:\n{context}"
    ),
    2: (
        "Summarise what happens from {start:.0f} s to {end:.0f} s of a video, from the clip descriptions below "
        "and the summary of what came before. Keep every event and the order of events.\n\n{context}"
    ),
    3: (
        "Write a detailed description of the whole video ({end:.0f} s) from the descriptions below: the "
        "setting, every object and person, what each does and when, changes of scene and camera, in time "
        "order.\n\n{context}"
    ),
}

QA_PROMPT = """Here are question types, each with a definition and examples:
{types}

Write questions about the video described below, at most ONE per type, only where the description answers it
(skip a type rather than guess). For each, give the open-ended answer (a sentence), a short answer of a few
words, and three plausible but wrong short answers. Reply with only a JSON list of objects with the keys
"Dimension", "Question", "Answer", "Short", "Distractors".

Video description:
{caption}"""


def _types_block(types: list[str]) -> str:
    lines = []
    for t in QUESTION_TYPES:
        if t.name in types:
            demos = "; ".join(f'Q: "{q}" A: "{a}"' for q, a in t.demos)
            lines.append(f"- {t.name}: {t.definition} Examples: {demos}")
    return "\n".join(lines)


_ITEMS = TypeAdapter(list[dict[str, Any]])


def parse_qa(payload: Any) -> list[QAItem]:
    """The teacher's JSON list -> QA items; raises ValueError naming what is wrong (sent back for repair)."""
    items = []
    for i, raw in enumerate(_ITEMS.validate_python(payload)):
        missing = {"Dimension", "Question", "Answer", "Short", "Distractors"} - set(raw)
        if missing:
            raise ValueError(f"item {i} lacks {sorted(missing)}")
        if raw["Dimension"] not in BY_NAME:
            raise ValueError(f"item {i}: unknown Dimension {raw['Dimension']!r}; use one of the listed types")
        items.append(
            QAItem(
                type=raw["Dimension"],
                question=raw["Question"],
                answer=raw["Answer"],
                short=raw["Short"],
                distractors=raw["Distractors"],
            )
        )
    return items


class LLMTeacher:
    """Sends level-1 clips as frames (or the video itself, to a server that takes videos, like ours)."""

    def __init__(self, client: HTTPTeacher, send_video: bool = False) -> None:
        self.client = client
        self.send_video = send_video
        self.name = f"http:{client.model}"

    async def caption(self, video: VideoContext, task: CaptionTask) -> str:
        stamps = ", ".join(f"{t:.0f}s" for t in task.timestamps)
        text = LEVEL_PROMPTS[task.level].format(
            start=task.start, end=task.end, stamps=stamps, context="\n".join(task.context) or "(the start)"
        )
        prompt = TeacherPrompt(SYSTEM, text)
        if task.level == 1:
            if self.send_video:
                prompt.video = video.path
            elif task.frames is not None:
                prompt.frames = list(task.frames)
        return (await self.client.generate(prompt)).strip()

    async def questions(self, video: VideoContext, caption: str, types: list[str]) -> list[QAItem]:
        text = QA_PROMPT.format(types=_types_block(types), caption=caption)
        items = await self.client.generate_json(TeacherPrompt(SYSTEM, text), parse_qa)
        seen: set[str] = set()  # the first question of each asked type
        kept: list[QAItem] = []
        for q in items:
            if q.type in types and q.type not in seen:
                seen.add(q.type)
                kept.append(q)
        return kept

    def usage(self) -> dict:
        return self.client.usage.as_dict()


def dumps_usage(usage: dict) -> str:
    return json.dumps(usage, sort_keys=True)
