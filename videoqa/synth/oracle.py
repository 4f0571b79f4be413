"""The oracle teacher: captions and QA written from the procedural world's ground truth, in the same output
schema as a model teacher, so every synthetic answer can be checked against what the video shows.

Captions follow the recurrent levels (level-1 per 10 s clip, level-2 per 30 s, level-3 for the video) from the
timeline. QA: at most one question per type per video (paper section 3.2), 14 of the 16 types; the world has
no people, so it cannot express Description-Human or Fine-Grained Action. Unlike a model teacher, the oracle
asks from the ground truth rather than from the caption: it cannot misread its own caption.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import permutations

from videoqa.synth.schema import CaptionTask, QAItem, VideoContext
from videoqa.synth.world import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, Scene, SceneObject

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


def name(o: SceneObject) -> str:
    return f"{o.colour} {o.shape}"


def _count_phrase(n: int) -> str:
    return f"{NUMBER_WORDS[n]} object" + ("s" if n != 1 else "")


def _shot_phrase(scene: Scene, o: SceneObject) -> str:
    return "" if len(scene.shots) == 1 else f" in the scene with the {scene.shots[o.shot].background} background"


# ---- captions ------------------------------------------------------------------------------------------------


def describe_window(scene: Scene, a: float, b: float, detailed: bool = True) -> str:
    """What happens on screen in [a, b): shots shown, camera, objects and their events, in time order."""
    parts: list[str] = []
    for shot in scene.shots:
        if shot.end <= a or shot.start >= b:
            continue
        s = f"At {shot.start:.1f} seconds the scene cuts to" if shot.start >= a and shot.index else "The scene shows"
        s += f" a {shot.background} background"
        if shot.pan:
            s += f" while the camera pans {shot.pan}"
        if shot.wall and detailed:
            s += ", with a gray wall standing in the middle of the view" if detailed else ""
        parts.append(s + ".")
        for o in scene.objects:
            if o.shot != shot.index or o.leave <= a or o.appear >= b:
                continue
            if o.appear >= a:
                s = f"At {o.appear:.1f} seconds a {name(o)} appears and moves {o.direction}"
            else:
                s = f"A {name(o)} keeps moving {o.direction}"
            if detailed:
                s += " quickly" if o.speed >= 20 else " slowly" if o.speed < 8 else ""
            events = []
            if o.change_at is not None and a <= o.change_at < b:
                events.append(f"turns {o.colour_after} at {o.change_at:.1f} seconds")
            for h0, h1 in scene.hidden_spans(o):
                if a <= h0 < b:
                    events.append(f"passes behind the wall from {h0:.1f} to {h1:.1f} seconds")
            if o.leave < shot.end and a <= o.leave < b:
                events.append(f"disappears at {o.leave:.1f} seconds")
            if events:
                s += ", " + ", then ".join(events)
            parts.append(s + ".")
    return " ".join(parts) or "Nothing changes."


def caption_from_truth(scene: Scene, task: CaptionTask) -> str:
    if task.level == 3:
        head = (
            f"The video lasts {scene.duration:.1f} seconds and shows {_count_phrase(len(scene.objects))} in "
            f"{NUMBER_WORDS[len(scene.shots)]} scene{'s' if len(scene.shots) > 1 else ''}."
        )
        return f"{head} {describe_window(scene, 0.0, scene.duration)}"
    text = describe_window(scene, task.start, task.end, detailed=task.level == 1)
    return f"From {task.start:.0f} to {task.end:.0f} seconds: {text}"


# ---- questions -----------------------------------------------------------------------------------------------

Gen = Callable[[Scene, random.Random], QAItem | None]


def _other(pool: list[str], answer: str, rng: random.Random, k: int = 3) -> list[str]:
    return rng.sample([p for p in pool if p != answer], k)


def _absent_objects(scene: Scene, k: int, rng: random.Random) -> list[str]:
    present = {name(o) for o in scene.objects} | {f"{o.colour_after} {o.shape}" for o in scene.objects}
    pool = [f"{c} {s}" for c in sorted(COLOURS) for s in SHAPES if f"{c} {s}" not in present]
    return rng.sample(pool, k)


def q_count(scene: Scene, rng: random.Random) -> QAItem:
    n = len(scene.objects)
    return QAItem(
        type="Count",
        question="How many objects appear in the video?",
        answer=f"{NUMBER_WORDS[n].capitalize()} objects appear." if n != 1 else "One object appears.",
        short=str(n),
        distractors=_other([str(k) for k in range(1, 8)], str(n), rng),
    )


def q_object_direction(scene: Scene, rng: random.Random) -> QAItem | None:
    steady = [o for o in scene.objects if o.colour_after is None]
    if not steady:
        return None
    o = rng.choice(steady)
    return QAItem(
        type="Object Direction",
        question=f"In which direction does the {name(o)} move?",
        answer=f"The {name(o)} moves {o.direction}.",
        short=o.direction,
        distractors=_other(sorted(DIRECTIONS), o.direction, rng),
    )


def q_description_object(scene: Scene, rng: random.Random) -> QAItem | None:
    by_direction: dict[str, list[SceneObject]] = {}
    for o in scene.objects:
        by_direction.setdefault(o.direction, []).append(o)
    unique = [objs[0] for objs in by_direction.values() if len(objs) == 1 and objs[0].colour_after is None]
    if not unique:
        return None
    o = rng.choice(unique)
    return QAItem(
        type="Description-Object",
        question=f"What colour is the object that moves {o.direction}?",
        answer=f"It is {o.colour}.",
        short=o.colour,
        distractors=_other(sorted(COLOURS), o.colour, rng),
    )


def q_description_scene(scene: Scene, rng: random.Random) -> QAItem:
    bg = scene.shots[0].background
    return QAItem(
        type="Description-Scene",
        question="What colour is the background at the start of the video?",
        answer=f"The background is {bg}.",
        short=bg,
        distractors=_other(sorted(BACKGROUNDS), bg, rng),
    )


def q_camera_direction(scene: Scene, rng: random.Random) -> QAItem | None:
    panning = [(s, s.pan) for s in scene.shots if s.pan]
    if not panning:
        return None
    shot, pan = rng.choice(panning)
    where = "" if len(scene.shots) == 1 else f" in the scene with the {shot.background} background"
    return QAItem(
        type="Camera Direction",
        question=f"Which way does the camera pan{where}?",
        answer=f"The camera pans {pan}.",
        short=pan,
        distractors=_other(["left", "right", "up", "down"], pan, rng),
    )


def q_speed(scene: Scene, rng: random.Random) -> QAItem | None:
    for shot in rng.sample(scene.shots, len(scene.shots)):
        objs = sorted((o for o in scene.objects if o.shot == shot.index), key=lambda o: -o.speed)
        if len(objs) >= 2 and objs[0].speed >= 1.5 * objs[1].speed:
            where = _shot_phrase(scene, objs[0])
            others = [name(o) for o in objs[1:]][:3]
            return QAItem(
                type="Speed",
                question=f"Which object moves fastest{where}?",
                answer=f"The {name(objs[0])} moves fastest.",
                short=name(objs[0]),
                distractors=others + _absent_objects(scene, 3 - len(others), rng),
            )
    return None


def q_attribute_change(scene: Scene, rng: random.Random) -> QAItem | None:
    changing = [(o, o.colour_after) for o in scene.objects if o.colour_after is not None]
    if not changing:
        return None
    o, after = rng.choice(changing)
    return QAItem(
        type="Attribute Change",
        question=f"What colour does the {name(o)} turn into?",
        answer=f"It turns from {o.colour} to {after} at about {o.change_at:.0f} seconds.",
        short=after,
        distractors=_other([c for c in sorted(COLOURS) if c != o.colour], after, rng),
    )


def q_time_order(scene: Scene, rng: random.Random) -> QAItem | None:
    objs = sorted(scene.objects, key=lambda o: o.appear)
    if len(objs) < 2 or objs[1].appear - objs[0].appear < 1.0:
        return None
    later = [name(o) for o in objs[1:]][:3]
    return QAItem(
        type="Time Order",
        question="Which of these objects appears first?",
        answer=f"The {name(objs[0])} appears first, at {objs[0].appear:.1f} seconds.",
        short=name(objs[0]),
        distractors=later + _absent_objects(scene, 3 - len(later), rng),
    )


def q_temporal(scene: Scene, rng: random.Random) -> QAItem | None:
    late = [o for o in scene.objects if o.appear >= 2.0 and not scene.hidden(o, o.appear)]
    if not late or scene.duration < 12:
        return None
    o = rng.choice(late)
    t = round(o.appear)
    pool = [s for s in range(0, int(scene.duration)) if abs(s - t) >= 3]
    if len(pool) < 3:
        return None
    picks = sorted(rng.sample(pool, 3))
    return QAItem(
        type="Temporal",
        question=f"At about what time does the {name(o)} first appear?",
        answer=f"It appears at about {o.appear:.1f} seconds.",
        short=f"{t} seconds",
        distractors=[f"{s} seconds" for s in picks],
    )


def q_spatial(scene: Scene, rng: random.Random) -> QAItem | None:
    def quadrant(o: SceneObject) -> str | None:
        x, y = o.start
        gap = scene.object_size / 2 + 4  # whole object on one side of each middle line
        if abs(x - scene.width / 2) < gap or abs(y - scene.height / 2) < gap or scene.hidden(o, o.appear):
            return None
        return f"{'top' if y < scene.height / 2 else 'bottom'} {'left' if x < scene.width / 2 else 'right'}"

    placed = [(o, q) for o in scene.objects if (q := quadrant(o))]
    if not placed:
        return None
    o, q = rng.choice(placed)
    return QAItem(
        type="Spatial",
        question=f"In which part of the frame is the {name(o)} when it first appears?",
        answer=f"It appears in the {q} part of the frame.",
        short=q,
        distractors=_other(["top left", "top right", "bottom left", "bottom right"], q, rng),
    )


def q_binary(scene: Scene, rng: random.Random) -> QAItem | None:
    shown = {o.colour for o in scene.objects if o.colour_after is None}
    changing = {o.colour for o in scene.objects if o.colour_after} | {o.colour_after for o in scene.objects}
    absent = sorted(set(COLOURS) - shown - changing)
    if absent and (not shown or rng.random() < 0.5):
        colour, yes = rng.choice(absent), False
    elif shown:
        colour, yes = rng.choice(sorted(shown)), True
    else:
        return None
    return QAItem(
        type="Binary",
        question=f"Does a {colour} object appear in the video?",
        answer=f"Yes, a {colour} object appears." if yes else f"No, there is no {colour} object.",
        short="yes" if yes else "no",
        distractors=["no" if yes else "yes"],
    )


def q_non_existent(scene: Scene, rng: random.Random) -> QAItem | None:
    steady = [o for o in scene.objects if o.colour_after is None]
    if not steady:
        return None
    o = rng.choice(steady)
    if rng.random() < 0.5:
        question, answer = f"Does the {name(o)} change colour?", f"No, it stays {o.colour} the whole time."
    else:
        wrong = rng.choice([d for d in DIRECTIONS if d != o.direction])
        question, answer = f"Does the {name(o)} move {wrong}?", f"No, it moves {o.direction}."
    return QAItem(
        type="Non-Existent Actions with Existent Scene",
        question=question,
        answer=answer,
        short="no",
        distractors=["yes"],
    )


REASONS = {
    "wall": "It is behind the wall.",
    "left": "It has left the scene.",
    "early": "It has not appeared yet.",
    "colour": "It has changed colour.",
}


def q_causal(scene: Scene, rng: random.Random) -> QAItem | None:
    cases: list[tuple[SceneObject, float, str]] = []
    for o in scene.objects:
        if o.colour_after is not None:
            continue
        shot = scene.shots[o.shot]
        for h0, h1 in scene.hidden_spans(o):
            if h1 - h0 >= 0.5:
                cases.append((o, round((h0 + h1) / 2, 1), "wall"))
        if shot.end - o.leave >= 2.0:
            cases.append((o, round((o.leave + shot.end) / 2, 1), "left"))
        if o.appear - shot.start >= 2.0:
            cases.append((o, round((shot.start + o.appear) / 2, 1), "early"))
    if not cases:
        return None
    walls = [c for c in cases if c[2] == "wall"]
    o, t, why = rng.choice(walls or cases)  # occlusion is the rarest cause: ask it whenever the video has one
    return QAItem(
        type="Causal",
        question=f"Why can the {name(o)} not be seen at {t:.1f} seconds?",
        answer=REASONS[why],
        short=REASONS[why].rstrip("."),
        distractors=[r.rstrip(".") for k, r in REASONS.items() if k != why],
    )


def q_plot(scene: Scene, rng: random.Random) -> QAItem | None:
    if len(scene.shots) < 2:
        return None
    order = [s.background for s in scene.shots]
    text = ", then ".join(order)
    pool = {", then ".join(p) for p in permutations(sorted(BACKGROUNDS), len(order))} - {text}
    return QAItem(
        type="Plot Understanding",
        question="How does the background change over the course of the video?",
        answer=f"It goes from {text}, with a cut between each.",
        short=text,
        distractors=rng.sample(sorted(pool), 3),
    )


GENERATORS: dict[str, Gen] = {
    "Temporal": q_temporal,
    "Spatial": q_spatial,
    "Causal": q_causal,
    "Description-Scene": q_description_scene,
    "Description-Object": q_description_object,
    "Count": q_count,
    "Binary": q_binary,
    "Plot Understanding": q_plot,
    "Non-Existent Actions with Existent Scene": q_non_existent,
    "Time Order": q_time_order,
    "Object Direction": q_object_direction,
    "Camera Direction": q_camera_direction,
    "Speed": q_speed,
    "Attribute Change": q_attribute_change,
}


def questions_from_truth(scene: Scene, types: list[str]) -> list[QAItem]:
    """At most one question per requested type (the paper's rule); deterministic per scene seed."""
    out = []
    for t in types:
        gen = GENERATORS.get(t)
        item = gen(scene, random.Random(f"{scene.seed}:{t}")) if gen else None
        if item is not None:
            if not item.answer.lower().startswith(item.short.lower()):
                # Short answer first, then the sentence: the answer's first token carries the content, as the
                # multiple-choice letter must (a tiny model learns letters only once it computes content there).
                item.answer = f"{item.short[0].upper()}{item.short[1:]}. {item.answer}"
            out.append(item)
    return out


class OracleTeacher:
    """Reads the ground truth written next to each procedural video (same name, .json)."""

    name = "oracle"

    async def caption(self, video: VideoContext, task: CaptionTask) -> str:
        return caption_from_truth(_scene(video), task)

    async def questions(self, video: VideoContext, caption: str, types: list[str]) -> list[QAItem]:
        return questions_from_truth(_scene(video), types)

    def usage(self) -> dict:
        return {}


def _scene(video: VideoContext) -> Scene:
    if video.truth is None:
        raise ValueError(f"{video.id}: the oracle teacher needs the ground-truth JSON next to the video")
    return Scene.from_timeline(video.truth)
