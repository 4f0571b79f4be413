"""The converter, on tiny checkpoints written in the source layouts (same key names as the real ones).

Each source is made by renaming a tiny reference model's weights with an inverse mapping written here,
independently of videoqa.model.convert; the converted checkpoint must give the SAME logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from videoqa.cli import app
from videoqa.model.chat import ChatFormat
from videoqa.model.convert import ConversionError, convert
from videoqa.model.layout import VideoLayout
from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.model.preprocess import frames_to_pixel_values
from videoqa.model.prompt import expand_video_placeholders

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"]


def _logits(model: LlavaVideoForCausalLM, ckpt: Path, frames: int = 6) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    ids = ChatFormat(tok).video_question("Which way?", 3.0, [i * 0.5 for i in range(frames)])
    ids = expand_video_placeholders(ids, model.config.video_token_id, [model.num_video_tokens(frames)])
    pv = frames_to_pixel_values(np.random.default_rng(1).integers(0, 256, (frames, 126, 126, 3), dtype=np.uint8), 126)
    return model.first_step_logits(torch.tensor(ids), [pv])


def _text_cfg(model: LlavaVideoForCausalLM) -> dict:
    t = model.config.text_config
    return {
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "max_position_embeddings": t.max_position_embeddings,
        "rope_theta": t.rope_parameters["rope_theta"] if getattr(t, "rope_parameters", None) else 1e6,
        "rms_norm_eps": t.rms_norm_eps,
        "vocab_size": t.vocab_size,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
    }


def _write_original(model: LlavaVideoForCausalLM, ckpt: Path, out: Path, layout: VideoLayout) -> Path:
    """LlavaQwenForCausalLM layout: flat Qwen2 config + mm_* keys, model.* weight names, two shards."""
    weights = {}
    for key, t in model.checkpoint_state_dict().items():
        if key.startswith("vision_tower.vision_model."):
            new = "model.vision_tower.vision_tower." + key[len("vision_tower.") :]
        elif key.startswith("multi_modal_projector.linear_1."):
            new = "model.mm_projector.0." + key.rsplit(".", 1)[1]
        elif key.startswith("multi_modal_projector.linear_2."):
            new = "model.mm_projector.2." + key.rsplit(".", 1)[1]
        elif key == "image_newline":
            new = "model.image_newline"
        elif key == "frame_token":
            new = "model.faster_token"
        elif key.startswith("language_model.model."):
            new = "model." + key[len("language_model.model.") :]
        else:
            raise AssertionError(key)
        weights[new] = t
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()  # the original stores it
    dv = model.config.vision_config.hidden_size
    weights["model.vision_tower.vision_tower.vision_model.post_layernorm.weight"] = torch.ones(dv)  # unused there
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # old checkpoints carry these
    out.mkdir(parents=True)
    keys = sorted(weights)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: weights[k].contiguous() for k in ks}, str(out / name))
    index = {"weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    cfg = _text_cfg(model) | {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": dv,
        "mm_spatial_pool_mode": layout.pool_mode,
        "mm_spatial_pool_stride": layout.pool_stride,
        "mm_newline_position": layout.newline,
        "add_faster_video": layout.frame_token,
        "faster_token_stride": layout.slowfast_stride,
        "image_aspect_ratio": "anyres_max_9",
    }
    (out / "config.json").write_text(json.dumps(cfg))
    for name in TOKENIZER_FILES:
        shutil.copy2(ckpt / name, out / name)
    return out


def _write_onevision(model: LlavaVideoForCausalLM, ckpt: Path, out: Path, transformers5: bool) -> Path:
    """llava-hf llava_onevision: one extra tower layer that vision_feature_layer=-2 tells us to drop."""
    weights = {}
    for key, t in model.checkpoint_state_dict().items():
        if transformers5:
            for ours, theirs in [
                ("language_model.model.", "model.language_model."),
                ("vision_tower.", "model.vision_tower."),
                ("multi_modal_projector.", "model.multi_modal_projector."),
                ("image_newline", "model.image_newline"),
            ]:
                if key.startswith(ours):
                    key = theirs + key[len(ours) :]
                    break
        weights[key] = t
    prefix = "model.vision_tower.vision_model." if transformers5 else "vision_tower.vision_model."
    n = model.config.vision_config.num_hidden_layers
    for key in [k for k in weights if k.startswith(f"{prefix}encoder.layers.{n - 1}.")]:
        weights[key.replace(f"layers.{n - 1}.", f"layers.{n}.")] = torch.randn_like(weights[key])
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"))
    vc = model.config.vision_config.to_dict() | {"num_hidden_layers": n + 1}
    cfg = {
        "model_type": "llava_onevision",
        "architectures": ["LlavaOnevisionForConditionalGeneration"],
        "text_config": _text_cfg(model) | {"model_type": "qwen2"},
        "vision_config": vc,
        "vision_feature_layer": -2,
        "video_token_index": model.config.video_token_id,
    }
    (out / "config.json").write_text(json.dumps(cfg))
    for name in TOKENIZER_FILES:
        shutil.copy2(ckpt / name, out / name)
    return out


@pytest.mark.parametrize(
    "layout",
    [VideoLayout("average", 2, "grid", 1), VideoLayout("average", 2, "grid", 3, frame_token=True)],
    ids=["simple", "slowfast-s3"],
)
def test_original_layout_round_trip_gives_the_same_logits(make_tiny_checkpoint, tmp_path: Path, layout) -> None:
    ckpt = make_tiny_checkpoint(layout)
    model = LlavaVideoForCausalLM.from_pretrained(ckpt)
    src = _write_original(model, ckpt, tmp_path / "original", layout)
    out = convert(src, tmp_path / "converted", log=lambda *_: None)
    converted = LlavaVideoForCausalLM.from_pretrained(out)
    assert converted.config.layout == layout  # add_faster_video + faster_token_stride -> SlowFast + frame token
    assert converted.config.vision_config.num_hidden_layers == model.config.vision_config.num_hidden_layers
    assert (out / "model.safetensors.index.json").is_file()
    assert torch.equal(_logits(converted, out), _logits(model, ckpt))


@pytest.mark.parametrize("transformers5", [False, True], ids=["hf-4.x-names", "hf-5-names"])
def test_llava_onevision_round_trip_drops_the_unused_layer(tiny_checkpoint, tmp_path: Path, transformers5) -> None:
    model = LlavaVideoForCausalLM.from_pretrained(tiny_checkpoint)
    src = _write_onevision(model, tiny_checkpoint, tmp_path / "ov", transformers5)
    notes: list[str] = []
    out = convert(src, tmp_path / "converted", log=notes.append)
    converted = LlavaVideoForCausalLM.from_pretrained(out)
    assert converted.config.layout == VideoLayout("average", 2, "grid", 1)
    assert any("training layout" in n for n in notes)
    assert torch.equal(_logits(converted, out), _logits(model, tiny_checkpoint))


def test_bad_sources_get_clear_errors(tiny_checkpoint, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no config.json"):
        convert(tmp_path, tmp_path / "x")
    with pytest.raises(ConversionError, match="already in this project's format"):
        convert(tiny_checkpoint, tmp_path / "x")
    weird = tmp_path / "weird"
    weird.mkdir()
    (weird / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConversionError, match="unrecognised"):
        convert(weird, tmp_path / "x")


def test_cli_convert_with_dtype_and_layout_override(tiny_checkpoint, tmp_path: Path) -> None:
    model = LlavaVideoForCausalLM.from_pretrained(tiny_checkpoint)
    src = _write_original(model, tiny_checkpoint, tmp_path / "original", VideoLayout())
    result = CliRunner().invoke(
        app, ["model", "convert", str(src), str(tmp_path / "bf16"), "--dtype", "bfloat16", "--slowfast-stride", "2"]
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg["video_layout"]["slowfast_stride"] == 2 and cfg["dtype"] == "bfloat16"
    tokens = CliRunner().invoke(app, ["model", "tokens", "--frames", "4", "--checkpoint", str(tmp_path / "bf16")])
    assert tokens.output.strip() == str(2 * 4 * 5 + 2 * 2 * 3)  # grid 9: slow 4x4(+4), fast 2x2(+2)
    bad = CliRunner().invoke(app, ["model", "convert", str(src), str(tmp_path / "x"), "--dtype", "int8"])
    assert bad.exit_code != 0 and "--dtype" in bad.output
