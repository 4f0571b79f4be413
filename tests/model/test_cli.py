"""`videoqa model init-tiny` and `videoqa model tokens` through the real typer app."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from videoqa.cli import app
from videoqa.model.config import LlavaVideoConfig
from videoqa.model.layout import VideoLayout


def test_init_tiny_writes_a_checkpoint_with_the_requested_layout(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(
        app, ["model", "init-tiny", str(out), "--seed", "3", "--slowfast-stride", "3", "--frame-token"]
    )
    assert result.exit_code == 0, result.output
    cfg = LlavaVideoConfig.from_pretrained(out)
    assert cfg.layout == VideoLayout(slowfast_stride=3, frame_token=True)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    tokens = CliRunner().invoke(app, ["model", "tokens", "--frames", "6", "--checkpoint", str(out)])
    assert tokens.exit_code == 0, tokens.output
    # By hand: tiny grid 9; slow frames 0 and 3 pool 2x2 -> 4x4 + 4 newlines + frame token = 21; the four fast
    # frames pool 4x4 -> 2x2 + 2 newlines + frame token = 7: 2 * 21 + 4 * 7.
    assert cfg.grid == 9
    assert int(tokens.output.strip()) == 2 * 21 + 4 * 7


def test_tokens_prints_the_paper_count_for_64_frames() -> None:
    # 64 frames x (13x13 pooled grid + 13 newlines) = 11648 (2x2 average pool floors 27 to 13; SigLIP-384 grid 27).
    result = CliRunner().invoke(app, ["model", "tokens", "--frames", "64"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "11648"


def test_init_tiny_rejects_a_bad_layout_naming_the_value(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["model", "init-tiny", str(tmp_path / "x"), "--pool-mode", "median"])
    assert result.exit_code != 0
    assert "median" in result.output
    assert not (tmp_path / "x" / "config.json").exists()
