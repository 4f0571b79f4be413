"""LLaVA-Video-178K data for training: records, data-mix strategies, prompts with the time instruction, and
loss masks that keep only the assistant's tokens (LLaVA-NeXT llava/train/train.py semantics)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from videoqa.model.chat import ChatFormat, Turn, video_question_text
from videoqa.model.layout import VideoLayout, num_video_tokens
from videoqa.model.prompt import IMAGE_TAG, expand_video_placeholders

IGNORE = -100


def _apply_strategy(records: list[dict], strategy: str, rng: random.Random) -> list[dict]:
    """all | first:N|N% | end:N|N% | random:N|N% (LLaVA-NeXT data-mix strategies)."""
    if strategy == "all":
        return records
    kind, _, amount = strategy.partition(":")
    if kind not in ("first", "end", "random") or not amount:
        raise ValueError(f"sampling_strategy {strategy!r}: use all, first:N, end:N or random:N (N or N%)")
    n = int(len(records) * float(amount[:-1]) / 100) if amount.endswith("%") else int(amount)
    if kind == "first":
        return records[:n]
    if kind == "end":
        return records[-n:] if n else []
    return rng.sample(records, min(n, len(records)))


def load_records(data: str | Path, seed: int = 0) -> tuple[list[dict], Path]:
    """Records from a 178K json file or a data-mix YAML; returns them and the folder their paths are relative to."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"training data {data} does not exist")
    if data.suffix in (".yaml", ".yml"):
        mix = yaml.safe_load(data.read_text())
        entries = mix.get("datasets", mix) if isinstance(mix, dict) else mix
        rng = random.Random(seed)
        out: list[dict] = []
        for entry in entries:
            path = data.parent / entry["json_path"]
            out.extend(_apply_strategy(json.loads(path.read_text()), entry.get("sampling_strategy", "all"), rng))
        return out, data.parent
    return json.loads(data.read_text()), data.parent


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    frames: np.ndarray
    record_id: str


def record_turns(record: dict[str, Any], duration: float, timestamps: list[float]) -> list[Turn]:
    """A 178K record's conversation as chat turns: the `<image>` tag of the human turn becomes the video
    placeholder, followed by the time instruction (LLaVA-NeXT train.py); every text is kept as plain text."""
    turns: list[Turn] = []
    for turn in record["conversations"]:
        value = turn["value"]
        if turn["from"] != "human":
            turns.append(Turn("assistant", value))
        elif IMAGE_TAG in value:  # "<image>\n{question}" -> <video> "\n{time instruction}\n{question}"
            question = (
                value.replace(f"{IMAGE_TAG}\n", "", 1) if f"{IMAGE_TAG}\n" in value else value.replace(IMAGE_TAG, "", 1)
            )
            turns.append(Turn("user", video_question_text(question, duration, timestamps), video=True))
        else:
            turns.append(Turn("user", value))
    return turns


def build_example(
    record: dict[str, Any],
    frames: np.ndarray,
    duration: float,
    timestamps: list[float],
    tokenizer: Any,
    layout: VideoLayout,
    grid: int,
    video_token_id: int,
) -> tuple[list[int], list[int]]:
    """Token ids and labels for one record, rendered by the checkpoint's chat template (videoqa.model.chat):
    the time instruction in the first human turn, labels only on the assistant's answers (and their
    <|im_end|>). Text from the record (possibly written by a synth teacher) never becomes control tokens."""
    encoded = ChatFormat(tokenizer).render(record_turns(record, duration, timestamps), add_generation_prompt=False)
    ids = encoded.input_ids
    labels = [t if learn else IGNORE for t, learn in zip(ids, encoded.assistant_mask, strict=True)]
    count = num_video_tokens(layout, len(frames), grid)
    expanded = expand_video_placeholders(ids, video_token_id, [count])
    pos = ids.index(video_token_id)
    labels = labels[:pos] + [IGNORE] * count + labels[pos + 1 :]
    return expanded, labels
