"""Prompt pieces for LLaVA-Video: the time instruction, the placeholders and their expansion.

Conversations are rendered by the checkpoint's chat template in videoqa.model.chat (one implementation for the
gateway, training and eval).

The time instruction is the one LLaVA-Video was trained with (LLaVA-NeXT llava/train/train.py and
docs/LLaVA_Video_1003.md): timestamps joined with "," and no space before "Please". Note that
../shared/reference/llava-video.md writes the join as ", "; the official code, which is what the released
checkpoints saw in training, uses ",", so we follow the code.
"""

from __future__ import annotations

from collections.abc import Sequence

SYSTEM_PROMPT = "You are a helpful assistant."
VIDEO_TOKEN = "<video>"
"""Placeholder the engine expands to the video's embeddings (layout.num_video_tokens copies)."""
IMAGE_TAG = "<image>"
"""The tag LLaVA-Video-178K records use where the visual input goes."""


def time_instruction(duration: float, timestamps: Sequence[float]) -> str:
    """The exact LLaVA-Video time instruction for a video of `duration` seconds sampled at `timestamps`."""
    located = ",".join(f"{t:.2f}s" for t in timestamps)
    return (
        f"The video lasts for {duration:.2f} seconds, and {len(timestamps)} frames are uniformly sampled "
        f"from it. These frames are located at {located}.Please answer the following questions related "
        "to this video."
    )


def expand_video_placeholders(input_ids: Sequence[int], video_token_id: int, token_counts: Sequence[int]) -> list[int]:
    """Replace the i-th single `<video>` id with token_counts[i] copies (what vLLM's processor does)."""
    positions = [i for i, t in enumerate(input_ids) if t == video_token_id]
    if len(positions) != len(token_counts):
        raise ValueError(f"prompt has {len(positions)} <video> placeholders but {len(token_counts)} videos were given")
    out: list[int] = []
    videos = iter(token_counts)
    for t in input_ids:
        out.extend([t] * next(videos) if t == video_token_id else [t])
    return out
