"""The answer-letter rule shared by `videoqa eval` and the lmms-eval task: standard library only, since lmms-eval
imports it in its own environment."""

from __future__ import annotations

import re

LETTER = re.compile(r"^\s*([A-D])\b")
"""A multiple-choice answer is the letter it opens with (the paper's answer format, "A." or "A")."""


def answer_letter(text: str) -> str | None:
    """The option letter a generated answer opens with, or None."""
    found = LETTER.match(text)
    return found.group(1) if found else None
