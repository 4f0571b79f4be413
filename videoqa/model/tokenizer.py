"""A small byte-level BPE tokenizer for tiny checkpoints, trained here with `tokenizers` (deterministic).

It carries the special tokens a real LLaVA-Video (Qwen2) checkpoint needs: ChatML markers and the
<video>/<image> placeholders, and the chat template (chat_template below) that videoqa.model.chat renders prompts with.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from videoqa.model.prompt import IMAGE_TAG, SYSTEM_PROMPT, VIDEO_TOKEN, time_instruction

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", VIDEO_TOKEN, IMAGE_TAG]


def chat_template(control_tokens: Sequence[str]) -> str:
    """The chat template our checkpoints carry: LLaVA-Video's qwen_1_5 ChatML.

    A default system turn unless the first message is a system (or developer) one; `developer` is rendered as
    `system` (OpenAI's newer name for it). Content is a string or OpenAI-style parts: a `video` part becomes
    the `<video>` placeholder and its newline, text parts are written as they are. Text containing one of the
    tokenizer's control tokens is refused: servers that render this template and then tokenize the whole
    string (plain vLLM) would otherwise turn it into real control tokens. videoqa.model.chat never passes user
    text through the template, so the gateway keeps such text, as plain characters.
    The `for part in message['content']` loop is also how vLLM detects that it should pass parts, not strings.
    """
    controls = json.dumps(sorted(control_tokens))  # one template per token set, whichever order it comes in
    return (
        "{%- set controls = " + controls + " -%}"
        "{%- if messages[0]['role'] not in ['system', 'developer'] -%}"
        "{{- '<|im_start|>system\\n" + SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- set role = 'system' if message['role'] == 'developer' else message['role'] -%}"
        "{%- if role not in ['system', 'user', 'assistant'] -%}"
        "{{- raise_exception('unsupported chat role: ' + message['role']) -}}"
        "{%- endif -%}"
        "{{- '<|im_start|>' + role + '\\n' -}}"
        "{%- if message['content'] is string -%}"
        "{%- for control in controls if control in message['content'] -%}"
        "{{- raise_exception('message text contains the control token ' + control + '; remove it') -}}"
        "{%- endfor -%}"
        "{{- message['content'] -}}"
        "{%- else -%}"
        "{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'video' -%}"
        "{{- '" + VIDEO_TOKEN + "\\n' -}}"
        "{%- elif part['type'] == 'text' -%}"
        "{%- for control in controls if control in part['text'] -%}"
        "{{- raise_exception('message text contains the control token ' + control + '; remove it') -}}"
        "{%- endfor -%}"
        "{{- part['text'] -}}"
        "{%- else -%}"
        "{{- raise_exception('unsupported content part: ' + part['type'] + '; LLaVA-Video takes text and video') -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


CHAT_TEMPLATE = chat_template(SPECIAL_TOKENS)


def control_tokens(tokenizer: Any) -> list[str]:
    """Every added token of a tokenizer: any of them typed in text would be matched as one token."""
    return sorted({tok.content for tok in tokenizer.added_tokens_decoder.values()})


_WORDS = {
    "colours": "red green blue yellow orange purple pink white black gray grey brown cyan magenta",
    "shapes": "circle square triangle star rectangle ball box disk object objects shape shapes",
    "motion": "moves moving move left right up down toward away from across stops stays still fast slow "
    "slowly quickly speed direction camera pans panning appears appear leaves leave enters exits "
    "disappears changes changed turns becomes grows shrinks bigger smaller behind front occluded hidden",
    "counting": "zero one two three four five six seven eight nine ten many how number count total",
    "qa": "what which where when why how is are does do did the a an of in on at to and or not no yes "
    "video scene frame frames first last then after before during while end beginning middle color "
    "colour size there this that it its they them happens happened answer question options option "
    "describe description detailed background foreground screen top bottom corner center",
    "letters": "A B C D E F Options: A. B. C. D.",
}


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    words = " ".join(_WORDS.values()).split()
    lines = [" ".join(_WORDS.values())]
    lines.append(time_instruction(12.5, [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5]))
    lines.append(SYSTEM_PROMPT)
    for _ in range(3000):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + rng.choice(".?!,"))
    for i in range(200):
        lines.append(f"{i} {i / 4:.2f}s {i}.{i % 100:02d} seconds")
    return lines


def build_tokenizer(seed: int = 0, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on a built-in corpus; same seed -> same tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[VIDEO_TOKEN, IMAGE_TAG, "<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
