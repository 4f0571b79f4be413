"""Convert LLaVA-Video checkpoints into this project's format (docs/architecture.md).

Sources:
* the original LLaVA-NeXT layout (LlavaQwenForCausalLM, e.g. lmms-lab/LLaVA-Video-7B-Qwen2): a flat Qwen2
  config.json with mm_* keys, weights under model.*, model.vision_tower.vision_tower.vision_model.*,
  model.mm_projector.{0,2}.*, model.image_newline (and model.faster_token for SlowFast);
* llava-hf `llava_onevision` directories, with transformers 4.x key names (language_model.model.*, ...)
  or transformers 5 names (model.language_model.*, ...).

Key renames follow transformers' convert_llava_onevision_weights_to_hf.py. Tensors are streamed one shard at
a time, so a 72B checkpoint never sits twice in memory.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoTokenizer

from videoqa.model.config import LlavaVideoConfig
from videoqa.model.layout import VideoLayout
from videoqa.model.prompt import IMAGE_TAG, VIDEO_TOKEN
from videoqa.model.tokenizer import chat_template, control_tokens

QWEN2_KEYS = [
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rope_theta",
    "rms_norm_eps",
    "vocab_size",
    "tie_word_embeddings",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "hidden_act",
    "bos_token_id",
    "eos_token_id",
    "attention_dropout",
]
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
]
# Original layout: (source prefix, our prefix), first match wins.
ORIGINAL_RENAMES = [
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower.vision_model."),
    ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
    ("model.image_newline", "image_newline"),
    ("model.faster_token", "frame_token"),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
]
ONEVISION_RENAMES = [
    # transformers 5
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.image_newline", "image_newline"),
    ("lm_head.", "language_model.lm_head."),
    # transformers 4.x: already our names
    ("language_model.", "language_model."),
    ("vision_tower.", "vision_tower."),
    ("multi_modal_projector.", "multi_modal_projector."),
    ("image_newline", "image_newline"),
]


class ConversionError(ValueError):
    """The source checkpoint cannot be converted; the message says what is wrong with it."""


@dataclass
class Source:
    kind: str  # "original" or "llava_onevision"
    config: dict
    shards: list[Path]


def detect(src: Path) -> Source:
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{src} has no config.json; pass a checkpoint directory")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") == "llava_video":
        raise ConversionError(f"{src} is already in this project's format (model_type llava_video)")
    if cfg.get("model_type") == "llava_onevision":
        kind = "llava_onevision"
    elif "LlavaQwenForCausalLM" in (cfg.get("architectures") or []) or "mm_vision_tower" in cfg:
        kind = "original"
    else:
        raise ConversionError(
            f"{src}: unrecognised checkpoint (model_type={cfg.get('model_type')!r}, "
            f"architectures={cfg.get('architectures')}); expected LlavaQwenForCausalLM or llava_onevision"
        )
    index = src / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted({src / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise ConversionError(f"{src} has no .safetensors weights (convert .bin checkpoints to safetensors first)")
    return Source(kind, cfg, shards)


def _iter_tensors(shard: Path) -> Iterator[tuple[str, torch.Tensor]]:
    with safe_open(str(shard), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            yield key, f.get_tensor(key)


def _rename(key: str, renames: list[tuple[str, str]]) -> str | None:
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def _scan_shapes(src: Source) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in src.shards:
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def _declared_image_size(cfg: dict, kind: str) -> int | None:
    """The tower's input size as the source declares it: llava_onevision's vision_config.image_size, or the
    "-384" suffix of the original's mm_vision_tower name (google/siglip-so400m-patch14-384)."""
    if kind == "llava_onevision":
        size = (cfg.get("vision_config") or {}).get("image_size")
        return int(size) if size else None
    match = re.search(r"-(\d+)$", str(cfg.get("mm_vision_tower") or ""))
    return int(match.group(1)) if match else None


def _vision_config(
    shapes: dict[str, tuple[int, ...]], prefix: str, keep_layers: int, heads: int | None, declared: int | None = None
) -> dict:
    patch = shapes[f"{prefix}embeddings.patch_embedding.weight"]  # [Dv, 3, p, p]
    positions = shapes[f"{prefix}embeddings.position_embedding.weight"][0]
    hidden, patch_size = patch[0], patch[-1]
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConversionError(f"vision position embeddings ({positions}) are not a square grid")
    # SigLIP-so400m takes 384 px, which patch 14 does not divide: the conv reads a 27x27 grid and ignores the last
    # 6 pixels. side * patch (378) would make the preprocessing resize to 378 instead, a different image than the
    # model was trained on, so the declared size wins whenever it gives the same grid.
    image_size = declared if declared is not None and declared // patch_size == side else side * patch_size
    intermediate = shapes[f"{prefix}encoder.layers.0.mlp.fc1.weight"][0]
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": keep_layers,
        # so400m has 16 heads of 72; SigLIP base/large use heads of 64.
        "num_attention_heads": heads or (16 if hidden == 1152 else max(hidden // 64, 1)),
        "image_size": image_size,
        "patch_size": patch_size,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu_pytorch_tanh",
    }


def _count_layers(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    layers = {int(k[len(prefix) :].split(".")[0]) for k in shapes if k.startswith(prefix)}
    if not layers:
        raise ConversionError(f"no weights under {prefix!r}")
    return max(layers) + 1


def convert(
    src: str | Path,
    out: str | Path,
    dtype: torch.dtype | None = None,
    layout: VideoLayout | None = None,
    vision_heads: int | None = None,
    max_frames: int = 64,
    log=print,
) -> Path:
    """Convert `src` into `out`; returns `out`. `layout` overrides the layout carried over from the source."""
    src, out = Path(src), Path(out)
    source = detect(src)
    shapes = _scan_shapes(source)
    cfg = source.config

    vprefix: str | None  # the vision tower's key prefix; None when no tower weights are found
    if source.kind == "original":
        renames = ORIGINAL_RENAMES
        vprefix = "model.vision_tower.vision_tower.vision_model."
        keep = _count_layers(shapes, vprefix + "encoder.layers.")  # the parent deleted the last layer already
        text_cfg = {k: cfg[k] for k in QWEN2_KEYS if k in cfg} | {"model_type": "qwen2"}
        carried = VideoLayout.from_llava_config(cfg)
        if carried.frame_token and "model.faster_token" not in shapes:
            raise ConversionError("config enables add_faster_video but the weights have no model.faster_token")
    else:
        renames = ONEVISION_RENAMES
        vprefix = next(
            (
                p
                for p in ("model.vision_tower.vision_model.", "vision_tower.vision_model.")
                if any(k.startswith(p) for k in shapes)
            ),
            None,
        )
        if vprefix is None:
            raise ConversionError("no vision tower weights found (vision_tower.vision_model.*)")
        total = _count_layers(shapes, vprefix + "encoder.layers.")
        vfl = cfg.get("vision_feature_layer", -1)
        keep = total + 1 + vfl if vfl < 0 else vfl  # hidden_states[vfl] is the output of this many layers
        text_cfg = dict(cfg.get("text_config") or {}) | {"model_type": "qwen2"}
        # HF's onevision path pools bilinear with one newline at inference; LLaVA-Video was trained with
        # average pooling and grid newlines, so that is what we carry unless told otherwise.
        carried = VideoLayout("average", 2, "grid", 1)
        log(
            "llava_onevision source: using the LLaVA-Video training layout (average, stride 2, grid); "
            "override with the layout flags if this checkpoint was trained otherwise"
        )
    layout = layout or carried

    tokenizer = _convert_tokenizer(src, out)
    video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    vocab = int(text_cfg.get("vocab_size") or shapes.get("model.embed_tokens.weight", (0,))[0])
    if video_token_id >= vocab:
        raise ConversionError(
            f"<video> got id {video_token_id}, beyond the LM vocab_size {vocab}: no spare embedding rows"
        )
    tie = bool(text_cfg.get("tie_word_embeddings", False)) or not any(k.endswith("lm_head.weight") for k in shapes)
    text_cfg["tie_word_embeddings"] = tie
    config = LlavaVideoConfig(
        architectures=["LlavaVideoForCausalLM"],
        vision_config=_vision_config(shapes, vprefix, keep, vision_heads, _declared_image_size(cfg, source.kind)),
        text_config=text_cfg,
        video_layout=layout.to_dict(),
        video_token=VIDEO_TOKEN,
        video_token_id=video_token_id,
        max_frames=max_frames,
        tie_word_embeddings=tie,
        # transformers' configs take extra fields (wrap_init_to_accept_kwargs); its dataclass_transform cannot say so.
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),  # type: ignore[call-arg]
    )

    weight_map: dict[str, str] = {}
    total_shards = len(source.shards)
    for i, shard in enumerate(source.shards, start=1):
        converted: dict[str, torch.Tensor] = {}
        for key, tensor in _iter_tensors(shard):
            if key.endswith("rotary_emb.inv_freq"):
                continue
            new = _rename(key, renames)
            if new is None:
                raise ConversionError(f"unexpected weight {key!r} in {shard.name}")
            if new.startswith("vision_tower.vision_model."):
                rest = new[len("vision_tower.vision_model.") :]
                if rest.startswith(("post_layernorm.", "head.")):
                    continue  # LLaVA-Video reads the tower before these
                if rest.startswith("encoder.layers.") and int(rest.split(".")[2]) >= keep:
                    continue
            if new == "frame_token" and not layout.frame_token:
                continue
            if tie and new == "language_model.lm_head.weight":
                continue
            converted[new] = (
                tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
            ).contiguous()
        name = "model.safetensors" if total_shards == 1 else f"model-{i:05d}-of-{total_shards:05d}.safetensors"
        out.mkdir(parents=True, exist_ok=True)
        save_file(converted, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(converted, name))
        log(f"converted shard {i}/{total_shards}: {len(converted)} tensors")
    if "image_newline" not in weight_map:
        raise ConversionError("the source has no image_newline weight; is it a LLaVA-OneVision/Video checkpoint?")
    if layout.frame_token and "frame_token" not in weight_map:
        raise ConversionError("layout asks for a frame token but the source has no faster_token weight")
    if total_shards > 1:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1)
        )
    config.dtype = str(dtype or next(iter(_iter_tensors(source.shards[0])))[1].dtype).removeprefix("torch.")
    config.save_pretrained(out)
    return out


def _convert_tokenizer(src: Path, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    copied = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not copied:
        raise ConversionError(f"{src} has no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    tokenizer = AutoTokenizer.from_pretrained(src)
    missing = [t for t in (VIDEO_TOKEN, IMAGE_TAG) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.chat_template = chat_template(control_tokens(tokenizer))
    tokenizer.save_pretrained(out)
    for extra in ("generation_config.json",):
        if (src / extra).is_file():
            shutil.copy2(src / extra, out / extra)
    return tokenizer
