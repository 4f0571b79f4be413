"""The one chat format: prompts rendered by the checkpoint's own chat template, tokenized so that text from
users can never become control tokens.

The gateway, training and eval all build prompts here, from the template the checkpoint carries
(tokenizer_config / chat_template.jinja, written by videoqa.model.tokenizer.chat_template). Text that comes from
outside (questions, chat messages of any role, captions and answers a synth teacher wrote) is never parsed for
special tokens: the template is rendered with an opaque marker in place of each text, the template's own pieces
are tokenized normally (so `<|im_start|>`, `<|im_end|>` and `<video>` there are control tokens), and each text
is tokenized with the tokenizer's `split_special_tokens` (so a typed `<|im_start|>` or `<video>` stays plain
characters). The only control tokens in a prompt are therefore the template's: a user cannot open a turn, forge
a role or add a video placeholder through any text field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoqa.model.prompt import VIDEO_TOKEN, time_instruction

ROLES = ("system", "developer", "user", "assistant")

# Private-use code points: the template never writes them, so each marker in the rendered text is ours.
_MARK = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class Turn:
    """One message: its role, its text (untrusted), and whether the video placeholder opens it."""

    role: str
    text: str
    video: bool = False


def video_question_text(question: str, duration: float | None, timestamps: Sequence[float] | None) -> str:
    """The text after the `<video>` placeholder, as in training: "{time instruction}\\n{question}".

    Without timing information the time instruction is left out.
    """
    if duration is None or not timestamps:
        return question
    return f"{time_instruction(duration, timestamps)}\n{question}"


@dataclass
class Encoded:
    """A rendered conversation: token ids, and which of them belong to the assistant's answers."""

    input_ids: list[int]
    assistant_mask: list[bool]
    """True on the assistant's answer tokens and the end-of-turn token that closes each answer."""


class ChatFormat:
    """Render and tokenize conversations with a checkpoint's tokenizer and chat template."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "the tokenizer has no chat_template; rebuild or reconvert the checkpoint "
                "(videoqa model init-tiny / videoqa model convert write one)"
            )
        self.tokenizer = tokenizer
        self.video_token_id: int = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        self.eos_token_id: int | None = tokenizer.eos_token_id

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path) -> ChatFormat:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(checkpoint))

    def encode_text(self, text: str) -> list[int]:
        """Untrusted text -> ids, special-token strings kept as plain characters."""
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def _encode_template(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def render(self, turns: Sequence[Turn], add_generation_prompt: bool = True) -> Encoded:
        """Token ids of a conversation (the template adds the default system turn when none is given)."""
        messages = []
        for i, turn in enumerate(turns):
            if turn.role not in ROLES:
                raise ValueError(f"unknown chat role {turn.role!r}; use one of {', '.join(ROLES)}")
            parts: list[dict[str, str]] = [{"type": "video"}] if turn.video else []
            parts.append({"type": "text", "text": f"\ue000{i}\ue001"})
            messages.append({"role": turn.role, "content": parts})
        rendered = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        ids: list[int] = []
        mask: list[bool] = []
        pieces = _MARK.split(rendered)
        # split() alternates template text and marker numbers: t0, m0, t1, m1, ..., tn.
        closes_answer = False
        for k, piece in enumerate(pieces):
            if k % 2 == 0:
                piece_ids = self._encode_template(piece)
                ids.extend(piece_ids)
                # The answer's end-of-turn token is learned too (LLaVA-NeXT train.py), the rest of the template is not.
                learn_first = closes_answer and bool(piece_ids) and piece_ids[0] == self.eos_token_id
                mask.extend([learn_first] + [False] * (len(piece_ids) - 1) if piece_ids else [])
                closes_answer = False
            else:
                turn = turns[int(piece)]
                piece_ids = self.encode_text(turn.text)
                ids.extend(piece_ids)
                is_answer = turn.role == "assistant"
                mask.extend([is_answer] * len(piece_ids))
                closes_answer = is_answer
        return Encoded(ids, mask)

    def prompt_ids(self, turns: Sequence[Turn]) -> list[int]:
        """Ids of a prompt that ends with the opened assistant turn, ready for decoding."""
        return self.render(turns, add_generation_prompt=True).input_ids

    def video_question(
        self, question: str, duration: float | None = None, timestamps: Sequence[float] | None = None
    ) -> list[int]:
        """Prompt ids for one question about one video (eval, benchmarks, REST QA)."""
        return self.prompt_ids([Turn("user", video_question_text(question, duration, timestamps), video=True)])
