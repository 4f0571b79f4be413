"""default_checkpoint(): shipped demo checkpoint first, else a random tiny one built once, atomically, in the cache."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from videoqa.model import tiny


def test_default_checkpoint_builds_seed0_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path
) -> None:
    monkeypatch.setattr(tiny, "DEMO_CHECKPOINT", tmp_path / "no-demo")
    monkeypatch.setenv("VIDEOQA_CACHE_DIR", str(tmp_path / "cache"))
    first = tiny.default_checkpoint()
    assert first == tmp_path / "cache" / "tiny-default"
    # Same bytes as the seed-0 default-layout fixture, and no temp dirs left beside it.
    assert filecmp.cmp(first / "model.safetensors", tiny_checkpoint / "model.safetensors", shallow=False)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["tiny-default"]
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny.default_checkpoint() == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt


def test_default_checkpoint_prefers_the_shipped_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "config.json").write_text("{}")
    monkeypatch.setattr(tiny, "DEMO_CHECKPOINT", demo)
    monkeypatch.setenv("VIDEOQA_CACHE_DIR", str(tmp_path / "cache"))
    assert tiny.default_checkpoint() == demo
    assert not (tmp_path / "cache").exists()


def test_initializer_range_sets_the_lm_weights_scale(tmp_path: Path) -> None:
    """TinySpec.initializer_range is the std the LM's matrices and embeddings start from (the learnability
    ladder's lever: 0.09 at width 128 instead of Qwen2's 0.02); the tower keeps its own init."""
    from videoqa.model.llava_video import LlavaVideoForCausalLM

    for std in (0.02, 0.09):
        out = tiny.init_tiny(tmp_path / str(std), spec=tiny.TinySpec(initializer_range=std))
        model = LlavaVideoForCausalLM.from_pretrained(out)
        lm = model.language_model.model
        for weight in (lm.embed_tokens.weight, lm.layers[0].self_attn.q_proj.weight, lm.layers[1].mlp.up_proj.weight):
            assert float(weight.detach().std()) == pytest.approx(std, rel=0.05)
    with pytest.raises(ValueError, match="initializer_range"):
        tiny.TinySpec(initializer_range=0.0)
