"""Prompt pieces: the official time instruction and placeholder expansion (what vLLM's processor does)."""

from __future__ import annotations

import pytest

from videoqa.model.prompt import expand_video_placeholders, time_instruction


def test_time_instruction_joins_timestamps_with_a_bare_comma_like_llava_next_train_py() -> None:
    text = time_instruction(10.0, [0.0, 5.0])
    assert text == (
        "The video lasts for 10.00 seconds, and 2 frames are uniformly sampled from it. "
        "These frames are located at 0.00s,5.00s.Please answer the following questions related to this video."
    )


def test_expand_video_placeholders_repeats_each_placeholder_by_its_own_count() -> None:
    assert expand_video_placeholders([1, 9, 2, 9, 3], 9, [3, 1]) == [1, 9, 9, 9, 2, 9, 3]
    assert expand_video_placeholders([1, 2], 9, []) == [1, 2]


@pytest.mark.parametrize("counts", [[], [2, 2]])
def test_expand_video_placeholders_count_mismatch_is_a_clear_error(counts: list[int]) -> None:
    with pytest.raises(ValueError, match=f"1 <video> placeholders but {len(counts)} videos"):
        expand_video_placeholders([1, 9, 2], 9, counts)
