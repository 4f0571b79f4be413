"""The oracle teacher: captions and QA written from the procedural world's ground truth, in the
LLaVA-Video-178K record format (paper section 3; records like 0_30_s_academic_v0_1_cap_processed.json).

Question types covered here (of the paper's 16): Description-Object (colour), Count, Object Direction.
Multiple choice follows the paper's template, "<image>\\n{question}\\nOptions:\\nA. ...", answered "C. 7",
with the answer letter balanced by a seeded shuffle.
"""

from __future__ import annotations

import random
from typing import Any

from videoqa.synth.world import COLOURS, DIRECTIONS, Scene

LETTERS = "ABCD"
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


def caption(scene: Scene) -> str:
    """A detailed description (level-3 style) of the whole video from the ground truth."""
    parts = [
        f"The video lasts {scene.duration:.1f} seconds and shows {_count_phrase(len(scene.objects))} "
        "on a dark gray background."
    ]
    for o in sorted(scene.objects, key=lambda o: (o.appear, o.id)):
        when = "At the start" if o.appear == 0 else f"At {o.appear:.1f} seconds"
        sentence = f"{when}, a {o.colour} {o.shape} appears and moves {o.direction}"
        if o.leave < scene.duration:
            sentence += f" until it disappears at {o.leave:.1f} seconds"
        parts.append(sentence + ".")
    return " ".join(parts)


def _count_phrase(n: int) -> str:
    return f"{NUMBER_WORDS[n]} object" + ("s" if n != 1 else "")


def questions(scene: Scene) -> list[dict[str, Any]]:
    """Open-ended (question, answer, type) plus multiple-choice options for each question the scene allows."""
    rng = random.Random(scene.seed * 7919 + 1)
    out = []
    n = len(scene.objects)
    out.append(
        {
            "type": "Count",
            "question": "How many objects appear in the video?",
            "answer": str(n),
            "open_answer": f"{NUMBER_WORDS[n].capitalize()} objects appear." if n != 1 else "One object appears.",
            "choices": _distinct(str(n), [str(k) for k in range(1, 7)], rng),
        }
    )
    for o in scene.objects:
        out.append(
            {
                "type": "Object Direction",
                "question": f"In which direction does the {o.colour} {o.shape} move?",
                "answer": o.direction,
                "open_answer": f"The {o.colour} {o.shape} moves {o.direction}.",
                "choices": _distinct(o.direction, sorted(DIRECTIONS), rng),
            }
        )
    by_direction: dict[str, list] = {}
    for o in scene.objects:
        by_direction.setdefault(o.direction, []).append(o)
    for direction, objs in sorted(by_direction.items()):
        if len(objs) == 1:  # only ask when the description picks out one object
            o = objs[0]
            out.append(
                {
                    "type": "Description-Object",
                    "question": f"What colour is the object that moves {direction}?",
                    "answer": o.colour,
                    "open_answer": f"It is {o.colour}.",
                    "choices": _distinct(o.colour, sorted(COLOURS), rng),
                }
            )
    return out


def _distinct(answer: str, pool: list[str], rng: random.Random, k: int = 4) -> list[str]:
    distractors = rng.sample([p for p in pool if p != answer], k - 1)
    choices = [answer, *distractors]
    rng.shuffle(choices)  # the answer's letter is uniform over A-D
    return choices


def records(scene: Scene, video: str, source: str) -> dict[str, list[dict[str, Any]]]:
    """caption / open-ended / multiple-choice records for one video (relative `video` path)."""
    vid = f"{source}_{scene.seed}"
    out: dict[str, list[dict[str, Any]]] = {
        "caption": [
            {
                "id": f"{vid}_cap",
                "conversations": [
                    {"from": "human", "value": "<image>\nPlease describe this video in detail."},
                    {"from": "gpt", "value": caption(scene)},
                ],
                "data_source": source,
                "video": video,
            }
        ],
        "open_ended": [],
        "multiple_choice": [],
    }
    for i, q in enumerate(questions(scene)):
        out["open_ended"].append(
            {
                "id": f"{vid}_oe_{i}",
                "question_type": q["type"],
                "conversations": [
                    {"from": "human", "value": f"<image>\n{q['question']}"},
                    {"from": "gpt", "value": q["open_answer"]},
                ],
                "data_source": source,
                "video": video,
            }
        )
        letter = LETTERS[q["choices"].index(q["answer"])]
        options = "\n".join(f"{LETTERS[j]}. {c}" for j, c in enumerate(q["choices"]))
        out["multiple_choice"].append(
            {
                "id": f"{vid}_mc_{i}",
                "question_type": q["type"],
                "conversations": [
                    {"from": "human", "value": f"<image>\n{q['question']}\nOptions:\n{options}"},
                    {"from": "gpt", "value": f"{letter}. {q['answer']}"},
                ],
                "data_source": source,
                "video": video,
            }
        )
    return out
