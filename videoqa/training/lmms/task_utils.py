"""The lmms-eval task's functions (`!function utils.*` in the YAML that `videoqa lmms-task` writes; its utils.py
imports them from here). Standard library only: lmms-eval calls them in its own environment."""

from __future__ import annotations

from typing import Any

from videoqa.training.lmms.scoring import answer_letter


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """lmms-eval's video convention: a list of local file paths; the model uploads them to the gateway."""
    return [doc["video"]]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question as the record asks it (options included): what `videoqa eval` sends the engine."""
    return str(doc["question"])


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Accuracy by generated letter, the rule `videoqa eval` scores with."""
    return {"mc_accuracy": float(answer_letter(results[0]) == doc["answer"])}
