"""Tiny LLaVA-Video checkpoints made here, in the real format, through the same code path as a 7B one.

Nothing can be downloaded on our machines, so tests, the demo and CI build their own checkpoints: a small
SigLIP-style tower and a small Qwen2 (head_dim 64: vLLM's CPU attention needs >= 32) with a BPE tokenizer
trained here. Deterministic per seed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from videoqa.model.config import LlavaVideoConfig
from videoqa.model.layout import VideoLayout
from videoqa.model.prompt import VIDEO_TOKEN
from videoqa.model.tokenizer import build_tokenizer

DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "demo_checkpoint"


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny checkpoint."""

    image_size: int = 126
    """Tower input side in pixels (126 / patch 14 -> a 9x9 grid: odd, so floor/ceil pooling differ)."""
    patch_size: int = 14
    """SigLIP patch size."""
    vision_hidden: int = 128
    """Tower width."""
    vision_heads: int = 2
    """Tower attention heads."""
    vision_layers: int = 2
    """Tower layers kept (already truncated, like the real checkpoint's 26 of 27)."""
    vision_intermediate: int = 256
    """Tower MLP width."""
    hidden: int = 128
    """LM width H."""
    heads: int = 2
    """LM attention heads (head_dim = hidden / heads must be >= 32 for vLLM CPU; 64 here)."""
    kv_heads: int = 1
    """LM key/value heads (GQA, like Qwen2-7B's 4 of 28)."""
    layers: int = 2
    """LM layers."""
    intermediate: int = 384
    """LM MLP width."""
    max_position_embeddings: int = 8192
    """LM context length."""
    tie_word_embeddings: bool = True
    """Share the input embedding and lm_head weights."""
    tokenizer_vocab: int = 2048
    """Target BPE vocabulary size (the trained vocabulary may be smaller)."""
    max_frames: int = 64
    """Frames per video the engine is profiled for."""
    initializer_range: float = 0.02
    """Std of the LM's initial weights (Qwen2's 0.02). At the tiny width that scale leaves the LM on a plateau it
    did not leave in 20,000 steps of the learnability ladder's first rung; ~1/sqrt(hidden) (0.09 at 128) learns
    it in a few hundred (docs/training.md, "Learnability ladder")."""

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if not 0 < self.initializer_range <= 1:
            raise ValueError(f"initializer_range {self.initializer_range} must be in (0, 1]")
        if self.hidden % self.heads or self.hidden // self.heads < 32:
            raise ValueError(f"hidden {self.hidden} / heads {self.heads} must give head_dim >= 32 (vLLM CPU)")


def init_tiny(out: str | Path, seed: int = 0, layout: VideoLayout | None = None, spec: TinySpec | None = None) -> Path:
    """Write a random tiny checkpoint (config.json, model.safetensors, tokenizer) to `out`."""
    from videoqa.model.llava_video import LlavaVideoForCausalLM

    spec = spec or TinySpec()
    layout = layout or VideoLayout()
    out = Path(out)
    tokenizer = build_tokenizer(seed=seed, vocab_size=spec.tokenizer_vocab)
    vocab = -(-len(tokenizer) // 64) * 64  # pad like real checkpoints (Qwen2-7B: 152064 > 151646 tokens)
    video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    assert isinstance(video_token_id, int)  # one token in, one id out (the type also covers a list in)
    config = LlavaVideoConfig(
        architectures=["LlavaVideoForCausalLM"],
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "num_hidden_layers": spec.vision_layers,
            "num_attention_heads": spec.vision_heads,
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
        },
        text_config={
            "model_type": "qwen2",
            "hidden_size": spec.hidden,
            "intermediate_size": spec.intermediate,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
            "num_key_value_heads": spec.kv_heads,
            "max_position_embeddings": spec.max_position_embeddings,
            "vocab_size": vocab,
            "tie_word_embeddings": spec.tie_word_embeddings,
            "rope_theta": 1000000.0,
            "initializer_range": spec.initializer_range,
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        },
        video_layout=layout.to_dict(),
        video_token=VIDEO_TOKEN,
        video_token_id=video_token_id,
        max_frames=spec.max_frames,
        tie_word_embeddings=spec.tie_word_embeddings,
        # transformers' configs take extra fields (wrap_init_to_accept_kwargs); its dataclass_transform cannot say so.
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),  # type: ignore[call-arg]
    )
    torch.manual_seed(seed)
    model = LlavaVideoForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def default_checkpoint() -> Path:
    """The service's embedded default: the trained demo checkpoint if shipped, else a random tiny one built
    once into $VIDEOQA_CACHE_DIR (default ~/.cache/videoqa)."""
    if (DEMO_CHECKPOINT / "config.json").is_file():
        return DEMO_CHECKPOINT
    cache = Path(os.environ.get("VIDEOQA_CACHE_DIR", Path.home() / ".cache" / "videoqa"))
    target = cache / "tiny-default"
    if (target / "config.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tiny-default.", dir=cache))
    try:
        init_tiny(tmp, seed=0)
        try:
            tmp.rename(target)  # atomic: concurrent first starts keep whichever lands first
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
