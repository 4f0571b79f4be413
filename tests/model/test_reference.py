"""The torch reference model: checkpoint round trip, preprocessing, tokenizer, generation from a real video."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from videoqa.model.chat import ChatFormat
from videoqa.model.layout import VideoLayout
from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.model.preprocess import frames_to_pixel_values
from videoqa.model.prompt import VIDEO_TOKEN, expand_video_placeholders
from videoqa.model.tiny import TinySpec, init_tiny


def _prompt_ids(
    model: LlavaVideoForCausalLM, tokenizer, num_frames: int, question: str = "What happens?"
) -> torch.Tensor:
    ids = ChatFormat(tokenizer).video_question(question, float(num_frames), [float(i) for i in range(num_frames)])
    return torch.tensor(
        expand_video_placeholders(ids, model.config.video_token_id, [model.num_video_tokens(num_frames)])
    )


def _files_digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_init_tiny_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = init_tiny(tmp_path / "a", seed=3)
    b = init_tiny(tmp_path / "b", seed=3)
    c = init_tiny(tmp_path / "c", seed=4)
    assert _files_digest(a) == _files_digest(b)
    assert _files_digest(a)["model.safetensors"] != _files_digest(c)["model.safetensors"]


def test_tiny_spec_rejects_head_dim_below_32() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        TinySpec(hidden=64, heads=4)


def test_save_load_round_trip_gives_identical_logits(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model = LlavaVideoForCausalLM.from_pretrained(tiny_checkpoint)
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    pv = frames_to_pixel_values(np.random.default_rng(0).integers(0, 256, (5, 126, 126, 3), dtype=np.uint8), 126)
    ids = _prompt_ids(model, tok, 5)
    before = model.first_step_logits(ids, [pv])
    model.save_pretrained(tmp_path / "again")
    after = LlavaVideoForCausalLM.from_pretrained(tmp_path / "again").first_step_logits(ids, [pv])
    assert torch.equal(before, after)


def test_checkpoint_keys_follow_the_documented_format(tiny_checkpoint: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_checkpoint / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "image_newline" in keys
    assert {"multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_2.bias"} <= keys
    assert any(k.startswith("vision_tower.vision_model.encoder.layers.1.") for k in keys)
    assert any(k.startswith("language_model.model.layers.1.") for k in keys)
    assert not any("post_layernorm" in k or ".head." in k for k in keys)
    assert "language_model.lm_head.weight" not in keys  # tied in the tiny spec


def test_the_chat_template_does_not_depend_on_the_order_of_the_control_tokens() -> None:
    # The tiny builder and the converter list the same tokens in different orders; the shipped checkpoints' template
    # must come out the same from either, so that rebuilding one changes no file it does not mean to.
    from videoqa.model.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, chat_template

    assert chat_template(list(reversed(SPECIAL_TOKENS))) == chat_template(sorted(SPECIAL_TOKENS)) == CHAT_TEMPLATE


def test_tokenizer_special_tokens_and_chat_template(tiny_checkpoint: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", VIDEO_TOKEN, "<image>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "How many circles?"}]}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{VIDEO_TOKEN}\n"
        "How many circles?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_preprocess_normalises_and_resizes() -> None:
    frames = np.zeros((2, 40, 60, 3), dtype=np.uint8)
    frames[1] = 255
    pv = frames_to_pixel_values(frames, 126)
    assert pv.shape == (2, 3, 126, 126)
    assert torch.allclose(pv[0], torch.full_like(pv[0], -1.0)) and torch.allclose(pv[1], torch.ones_like(pv[1]))
    with pytest.raises(ValueError, match="uint8"):
        frames_to_pixel_values(frames.astype(np.float32), 126)
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        frames_to_pixel_values(np.zeros((2, 8, 8), dtype=np.uint8), 126)


def test_placeholder_count_mismatch_is_a_clear_error(tiny_checkpoint: Path) -> None:
    model = LlavaVideoForCausalLM.from_pretrained(tiny_checkpoint)
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    ids = torch.tensor(ChatFormat(tok).video_question("hi"))  # one unexpanded placeholder
    pv = frames_to_pixel_values(np.zeros((3, 126, 126, 3), dtype=np.uint8), 126)
    with pytest.raises(ValueError, match="expand_video_placeholders"):
        model.first_step_logits(ids, [pv])
    with pytest.raises(ValueError, match="2 videos"):
        expand_video_placeholders([1, 2, 3], 2, [5, 6])


def _encode_video(path: Path, frames: int = 12, size: int = 96) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("h264", rate=6)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            img[:, : (i + 1) * size // frames] = (255, 40, 40)  # a red bar that grows over time
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_tiny_checkpoint_generates_text_from_a_real_video(make_tiny_checkpoint, tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(VideoLayout("average", 2, "grid", 2))  # SlowFast
    video = tmp_path / "bar.mp4"
    _encode_video(video)
    with av.open(str(video)) as container:
        decoded = [(f.to_ndarray(format="rgb24"), float(f.time)) for f in container.decode(video=0)]
    picks = np.linspace(0, len(decoded) - 1, 6).astype(int)
    frames = np.stack([decoded[i][0] for i in picks])
    times = [decoded[i][1] for i in picks]
    model = LlavaVideoForCausalLM.from_pretrained(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    pv = frames_to_pixel_values(frames, model.config.image_size)
    ids = ChatFormat(tok).video_question("What grows?", 2.0, times)
    ids = torch.tensor(expand_video_placeholders(ids, model.config.video_token_id, [model.num_video_tokens(6)]))
    # By hand: grid 9, s=2: slow frames 0, 2, 4 pool to 4x4 + 4 newlines = 20; fast frames 1, 3, 5 to 2x2 + 2 = 6.
    assert model.num_video_tokens(6) == 3 * 20 + 3 * 6
    new = model.generate(ids, [pv], max_new_tokens=8)
    assert 1 <= len(new) <= 8
    assert isinstance(tok.decode(new), str)
    # Greedy decoding is deterministic, and the video changes the output distribution.
    assert model.generate(ids, [pv], max_new_tokens=8) == new
    other = frames_to_pixel_values(255 - frames, model.config.image_size)
    assert not torch.allclose(model.first_step_logits(ids, [pv]), model.first_step_logits(ids, [other]))
