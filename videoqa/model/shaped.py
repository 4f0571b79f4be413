"""Random checkpoints with the REAL geometry of the released LLaVA-Video models, in the ORIGINAL LLaVA-NeXT format.

No weights can be downloaded here, yet the first user with a GPU will convert lmms-lab/LLaVA-Video-7B-Qwen2 or
-72B-Qwen2. `init_shaped` writes what such a download looks like on disk (a flat Qwen2 `config.json` with the
`mm_*` keys of LlavaQwenForCausalLM, sharded safetensors with an index, the original state-dict names, a tokenizer
without `<video>`), at the real widths, head counts and vision geometry, with only the depth (LM and tower layers)
and the vocabulary cut so it fits a small machine. It then goes through `videoqa model convert` exactly as a real
checkpoint would, so the converter, the reference model and the vLLM model run at the real dimensions.

Published geometry (cited; the numbers below are copied from these files):
* Vision: google/siglip-so400m-patch14-384 config.json, vision_config: image_size 384, patch_size 14,
  hidden_size 1152, intermediate_size 4304, num_attention_heads 16, num_hidden_layers 27,
  hidden_act gelu_pytorch_tanh, layer_norm_eps 1e-6. LLaVA-NeXT's siglip_encoder.py deletes the last layer
  (`del self.vision_tower.vision_model.encoder.layers[-1:]`) and replaces the head with Identity before saving, so
  a release stores 26 layers (model.vision_tower.vision_tower.vision_model.encoder.layers.0..25) and the
  post_layernorm, but no head. 384 / 14 is not whole: the conv reads a 27x27 grid (729 positions).
* Qwen2-0.5B(-Instruct) config.json: hidden_size 896, intermediate_size 4864, num_attention_heads 14,
  num_key_value_heads 2, num_hidden_layers 24, vocab_size 151936, tie_word_embeddings true, rope_theta 1e6.
* Qwen2-7B-Instruct config.json (and lmms-lab/LLaVA-Video-7B-Qwen2's config.json, commit 733e147):
  hidden_size 3584, intermediate_size 18944, num_attention_heads 28, num_key_value_heads 4, num_hidden_layers 28,
  vocab_size 152064, tie_word_embeddings false, rope_theta 1e6; LLaVA keys mm_vision_tower
  "google/siglip-so400m-patch14-384", mm_vision_select_layer -2, model_type "llava".
* Qwen2-72B-Instruct config.json (commit 7c7b419): hidden_size 8192, intermediate_size 29568,
  num_attention_heads 64, num_key_value_heads 8, num_hidden_layers 80, vocab_size 152064,
  tie_word_embeddings false, rope_theta 1e6, sliding_window 131072.
* Video layout: the paper (arXiv 2410.02713, section 4 / A.2) releases 7B with V=(64,729,1,2) and 72B with
  V=(64,729,3,2); the official eval pools "average" with "grid" newlines (docs/model.md). The 72B's SlowFast is
  written the way the original code enables it: add_faster_video + faster_token_stride, with a learned
  model.faster_token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from videoqa.model.tokenizer import build_tokenizer

SIGLIP_TOWER = "google/siglip-so400m-patch14-384"


@dataclass(frozen=True)
class VisionGeometry:
    """SigLIP-so400m-patch14-384 (see the module docstring for the source)."""

    image_size: int = 384
    patch_size: int = 14
    hidden: int = 1152
    heads: int = 16
    intermediate: int = 4304
    layers: int = 27
    """Layers of the published tower; LLaVA-Video keeps (and its release stores) layers - 1."""

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size  # 27: the conv drops the last 6 pixels


@dataclass(frozen=True)
class ShapedModel:
    """The real LM + projector dimensions and the released video layout of one LLaVA-Video model."""

    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    layers: int
    vocab: int
    tie_word_embeddings: bool
    max_position_embeddings: int = 32768
    rope_theta: float = 1000000.0
    sliding_window: int | None = None
    max_window_layers: int = 28
    pool_mode: str = "average"
    newline: str = "grid"
    faster_token_stride: int = 1
    """SlowFast stride s (1 = simple); s > 1 is written as add_faster_video=True, faster_token_stride=s."""
    vision: VisionGeometry = field(default_factory=VisionGeometry)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SHAPES: dict[str, ShapedModel] = {
    # No lmms-lab LLaVA-Video release on Qwen2-0.5B was found; this is Qwen2-0.5B's geometry (as in
    # lmms-lab/llava-onevision-qwen2-0.5b-ov) under LLaVA-Video's layout: head_dim 64, GQA 7:1, tied embeddings.
    "llava-video-0.5b": ShapedModel(
        hidden=896,
        heads=14,
        kv_heads=2,
        intermediate=4864,
        layers=24,
        vocab=151936,
        tie_word_embeddings=True,
        max_window_layers=24,
    ),
    "llava-video-7b": ShapedModel(
        hidden=3584,
        heads=28,
        kv_heads=4,
        intermediate=18944,
        layers=28,
        vocab=152064,
        tie_word_embeddings=False,
    ),
    "llava-video-72b": ShapedModel(
        hidden=8192,
        heads=64,
        kv_heads=8,
        intermediate=29568,
        layers=80,
        vocab=152064,
        tie_word_embeddings=False,
        sliding_window=131072,
        max_window_layers=80,
        faster_token_stride=3,
    ),
}


def _tensors(
    shape: ShapedModel, layers: int, vocab: int, vision_layers: int, intermediate: int, gen: torch.Generator
) -> Iterator[tuple[str, torch.Tensor]]:
    """The original LlavaQwenForCausalLM state dict, one tensor at a time (so a 72B-wide layer streams)."""
    h, v = shape.hidden, shape.vision
    kv = shape.kv_heads * shape.head_dim

    def w(*dims: int) -> torch.Tensor:  # 0.02 is Qwen2's and SigLIP's initializer_range
        return torch.randn(*dims, generator=gen) * 0.02

    def norm(n: int) -> torch.Tensor:  # not all ones, so a swapped norm weight would show
        return 1.0 + torch.randn(n, generator=gen) * 0.02

    yield "model.embed_tokens.weight", w(vocab, h)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "self_attn.q_proj.weight", w(h, h)
        yield p + "self_attn.q_proj.bias", w(h)
        yield p + "self_attn.k_proj.weight", w(kv, h)
        yield p + "self_attn.k_proj.bias", w(kv)
        yield p + "self_attn.v_proj.weight", w(kv, h)
        yield p + "self_attn.v_proj.bias", w(kv)
        yield p + "self_attn.o_proj.weight", w(h, h)
        yield p + "mlp.gate_proj.weight", w(intermediate, h)
        yield p + "mlp.up_proj.weight", w(intermediate, h)
        yield p + "mlp.down_proj.weight", w(h, intermediate)
        yield p + "input_layernorm.weight", norm(h)
        yield p + "post_attention_layernorm.weight", norm(h)
    yield "model.norm.weight", norm(h)
    if not shape.tie_word_embeddings:
        yield "lm_head.weight", w(vocab, h)

    t = "model.vision_tower.vision_tower.vision_model."
    yield t + "embeddings.patch_embedding.weight", w(v.hidden, 3, v.patch_size, v.patch_size)
    yield t + "embeddings.patch_embedding.bias", w(v.hidden)
    yield t + "embeddings.position_embedding.weight", w(v.grid * v.grid, v.hidden)
    for i in range(vision_layers):
        p = f"{t}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield p + f"self_attn.{proj}.weight", w(v.hidden, v.hidden)
            yield p + f"self_attn.{proj}.bias", w(v.hidden)
        yield p + "layer_norm1.weight", norm(v.hidden)
        yield p + "layer_norm1.bias", w(v.hidden)
        yield p + "mlp.fc1.weight", w(v.intermediate, v.hidden)
        yield p + "mlp.fc1.bias", w(v.intermediate)
        yield p + "mlp.fc2.weight", w(v.hidden, v.intermediate)
        yield p + "mlp.fc2.bias", w(v.hidden)
        yield p + "layer_norm2.weight", norm(v.hidden)
        yield p + "layer_norm2.bias", w(v.hidden)
    # Saved by LLaVA-NeXT although the features are read before it (the converter drops it).
    yield t + "post_layernorm.weight", norm(v.hidden)
    yield t + "post_layernorm.bias", w(v.hidden)

    yield "model.mm_projector.0.weight", w(h, v.hidden)
    yield "model.mm_projector.0.bias", w(h)
    yield "model.mm_projector.2.weight", w(h, h)
    yield "model.mm_projector.2.bias", w(h)
    # llava_arch.py: image_newline = randn(H) / sqrt(H) (and faster_token likewise).
    yield "model.image_newline", torch.randn(h, generator=gen) / h**0.5
    if shape.faster_token_stride > 1:
        yield "model.faster_token", torch.randn(h, generator=gen) / h**0.5


def _config(
    shape: ShapedModel, like: str, layers: int, vocab: int, vision_layers: int, intermediate: int, dtype: torch.dtype
) -> dict:
    """config.json as an lmms-lab release writes it: the Qwen2 config flat at the top, plus LLaVA's mm_* keys."""
    slowfast = shape.faster_token_stride > 1
    return {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        "attention_dropout": 0.0,
        "bos_token_id": 151643,  # replaced by the ids of the same tokens in the small tokenizer
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": shape.max_position_embeddings,
        "max_window_layers": shape.max_window_layers,
        "num_attention_heads": shape.heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": shape.rope_theta,
        "sliding_window": shape.sliding_window,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab,
        # LLaVA-NeXT keys (llava/train/train.py ModelArguments, as saved in the lmms-lab configs)
        "mm_vision_tower": SIGLIP_TOWER,
        "mm_hidden_size": shape.vision.hidden,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_spatial_pool_mode": shape.pool_mode,
        "mm_spatial_pool_stride": 2,
        "mm_newline_position": shape.newline,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "anyres_max_9",
        "add_faster_video": slowfast,
        "faster_token_stride": shape.faster_token_stride if slowfast else 10,  # 10 is train.py's unused default
        "force_sample": True,
        "add_time_instruction": True,
        # Not an lmms-lab key: what was cut, so nobody mistakes this for a real checkpoint.
        "videoqa_shaped": {
            "like": like,
            "num_hidden_layers": [layers, shape.layers],
            "vocab_size": [vocab, shape.vocab],
            "vision_layers_kept": [vision_layers, shape.vision.layers - 1],
            "intermediate_size": [intermediate, shape.intermediate],
        },
    }


def init_shaped(
    like: str,
    out: str | Path,
    layers: int = 1,
    vocab: int = 4096,
    vision_layers: int = 2,
    intermediate: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    shard_bytes: int = 512 * 2**20,
) -> Path:
    """Write a random `like`-shaped checkpoint in the original LLaVA-NeXT format to `out`; returns `out`.

    `layers`, `vocab` and `vision_layers` cut depth and vocabulary; `intermediate` (default: the real one) narrows
    only the LM's MLP, for machines where even one 72B-wide layer does not fit.
    """
    if like not in SHAPES:
        raise ValueError(f"unknown model {like!r}; choose one of {sorted(SHAPES)}")
    if layers < 1 or vision_layers < 1:
        raise ValueError(f"layers ({layers}) and vision_layers ({vision_layers}) must be >= 1")
    shape = SHAPES[like]
    intermediate = intermediate or shape.intermediate
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # A real Qwen2 tokenizer cannot be downloaded: this is the project's small BPE one, with the same special
    # tokens (it already holds <video>/<image>, which the converter would otherwise add).
    tokenizer = build_tokenizer(seed=seed)
    if len(tokenizer) > vocab:
        raise ValueError(f"vocab {vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    tokenizer.save_pretrained(out)
    bos, eos = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")

    # Sharded like a release (model-0000i-of-0000n.safetensors + index), a shard at a time in memory.
    gen = torch.Generator().manual_seed(seed)
    shards: list[tuple[Path, list[str]]] = []
    current: dict[str, torch.Tensor] = {}
    size = 0

    def flush() -> None:
        path = out / f"shard-{len(shards):05d}.tmp"
        save_file(current, str(path), metadata={"format": "pt"})
        shards.append((path, list(current)))
        current.clear()

    for key, tensor in _tensors(shape, layers, vocab, vision_layers, intermediate, gen):
        tensor = tensor.to(dtype).contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > shard_bytes:
            flush()
            size = 0
        current[key] = tensor
        size += nbytes
    flush()

    weight_map: dict[str, str] = {}
    for i, (tmp, keys) in enumerate(shards, start=1):
        final = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tmp.rename(out / final)
        weight_map.update(dict.fromkeys(keys, final))
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    cfg = _config(shape, like, layers, vocab, vision_layers, intermediate, dtype) | {
        "bos_token_id": bos,
        "eos_token_id": eos,
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": bos, "eos_token_id": [eos, bos], "do_sample": False}, indent=2)
    )
    return out
