"""Prompt text: the official time instruction, ChatML and placeholder expansion (what vLLM's processor does)."""

from __future__ import annotations

import pytest

from videoqa.model.prompt import chatml, expand_video_placeholders, time_instruction, video_question_prompt


def test_time_instruction_joins_timestamps_with_a_bare_comma_like_llava_next_train_py() -> None:
    text = time_instruction(10.0, [0.0, 5.0])
    assert text == (
        "The video lasts for 10.00 seconds, and 2 frames are uniformly sampled from it. "
        "These frames are located at 0.00s,5.00s.Please answer the following questions related to this video."
    )


def test_video_question_prompt_is_the_qwen_1_5_chatml_conversation() -> None:
    prompt = video_question_prompt("What moves?", 2.0, [0.0, 1.0])
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>\n")
    assert prompt.endswith("\nWhat moves?<|im_end|>\n<|im_start|>assistant\n")
    assert video_question_prompt("Q?") == chatml([("user", "<video>\nQ?")])


def test_chatml_rejects_unknown_roles() -> None:
    with pytest.raises(ValueError, match="unknown chat role 'bot'"):
        chatml([("bot", "hi")])


def test_expand_video_placeholders_repeats_each_placeholder_by_its_own_count() -> None:
    assert expand_video_placeholders([1, 9, 2, 9, 3], 9, [3, 1]) == [1, 9, 9, 9, 2, 9, 3]
    assert expand_video_placeholders([1, 2], 9, []) == [1, 2]


@pytest.mark.parametrize("counts", [[], [2, 2]])
def test_expand_video_placeholders_count_mismatch_is_a_clear_error(counts: list[int]) -> None:
    with pytest.raises(ValueError, match=f"1 <video> placeholders but {len(counts)} videos"):
        expand_video_placeholders([1, 9, 2], 9, counts)
