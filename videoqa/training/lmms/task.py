"""Write our multiple-choice evaluation data (LLaVA-Video-178K format: a json file, a data-mix YAML or a data
folder) as an lmms-eval task folder, so lmms-eval scores a served model on it the way `videoqa eval` does.

    <out>/<name>.yaml   the task (`--include_path <out> --tasks <name>`)
    <out>/<name>.jsonl  one line per question: id, absolute video path, question with its options, answer letter
    <out>/utils.py      the task's functions, imported from videoqa.training.lmms.task_utils
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from videoqa.model.prompt import IMAGE_TAG
from videoqa.training.data import load_records
from videoqa.training.evaluate import resolve_data

TASK_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

UTILS = '''"""Functions of this lmms-eval task; written by `videoqa lmms-task`."""

from videoqa.training.lmms.task_utils import doc_to_text, doc_to_visual, process_results

__all__ = ["doc_to_text", "doc_to_visual", "process_results"]
'''


def task_docs(data: str | Path) -> list[dict[str, Any]]:
    """The multiple-choice records of `data` as task documents (open-ended ones have no letter to score)."""
    records, root = load_records(resolve_data(data))
    docs: list[dict[str, Any]] = []
    for record in records:
        human, gpt = record["conversations"][0]["value"], record["conversations"][1]["value"]
        if "Options:" not in human:
            continue
        video = (root / record["video"]).resolve()
        if not video.is_file():
            raise FileNotFoundError(f"record {record.get('id')!r}: its video {video} does not exist")
        docs.append(
            {
                "id": str(record.get("id", len(docs))),
                "video": str(video),
                "question": human.replace(IMAGE_TAG, "", 1).lstrip("\n"),
                "answer": gpt.strip()[0],
                "question_type": record.get("question_type", "unknown"),
            }
        )
    if not docs:
        raise ValueError(f"{data} has no multiple-choice records (a human turn with 'Options:')")
    return docs


def write_task(data: str | Path, out: str | Path, name: str = "videoqa_mc", max_new_tokens: int = 4) -> Path:
    """Write the task folder; returns the YAML's path."""
    if not TASK_NAME.match(name):
        raise ValueError(f"task name {name!r}: use lower-case letters, digits and _ (lmms-eval's --tasks syntax)")
    docs = task_docs(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{name}.jsonl").open("w") as f:
        for doc in docs:
            f.write(json.dumps(doc) + "\n")
    (out / "utils.py").write_text(UTILS)
    task = {
        "task": name,
        "dataset_path": "json",
        # lmms-eval resolves a relative data file against the YAML's folder, so the folder can move
        "dataset_kwargs": {"data_files": {"test": f"{name}.jsonl"}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_visual": "!function utils.doc_to_visual",
        "doc_to_text": "!function utils.doc_to_text",
        "doc_to_target": "answer",
        # greedy and 4 tokens for the letter, as `videoqa eval` asks the engine
        "generation_kwargs": {"max_new_tokens": max_new_tokens, "temperature": 0, "do_sample": False},
        "process_results": "!function utils.process_results",
        "metric_list": [{"metric": "mc_accuracy", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1, "source": str(Path(data).resolve())},
    }
    text = yaml.safe_dump(task, sort_keys=False)
    # `!function` is a YAML tag lmms-eval resolves; safe_dump would quote it as a string
    text = re.sub(r"'(!function [\w.]+)'", r"\1", text)
    path = out / f"{name}.yaml"
    path.write_text(text)
    return path
