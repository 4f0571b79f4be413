"""`videoqa model ...`: token layout math, tiny checkpoints, conversion."""

from __future__ import annotations

from pathlib import Path

import typer

from videoqa.model.layout import LayoutError, VideoLayout, num_video_tokens

model_app = typer.Typer(help="LLaVA-Video model: token layout, tiny checkpoints, conversion.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `videoqa model ...` to the root app."""
    app.add_typer(model_app, name="model")


def _layout_options(
    pool_mode: str, pool_stride: int, newline: str, slowfast_stride: int, frame_token: bool
) -> VideoLayout:
    try:
        return VideoLayout(pool_mode, pool_stride, newline, slowfast_stride, frame_token)  # type: ignore[arg-type]
    except LayoutError as err:
        raise typer.BadParameter(str(err)) from err


@model_app.command("tokens")
def tokens(
    frames: int = typer.Option(..., "--frames", min=1, help="Number of frames in the video."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Read the layout and grid from a checkpoint."),
    grid: int = typer.Option(27, "--grid", min=1, help="Vision patch grid side (27 for SigLIP-384)."),
    pool_mode: str = typer.Option("average", "--pool-mode", help="average | bilinear | max"),
    pool_stride: int = typer.Option(2, "--pool-stride", min=1),
    newline: str = typer.Option("grid", "--newline", help="grid | frame | one_token | no_token"),
    slowfast_stride: int = typer.Option(1, "--slowfast-stride", min=1, help="1 = simple representation."),
    frame_token: bool = typer.Option(False, "--frame-token", help="Learned token after every frame."),
) -> None:
    """Print the number of visual tokens a video of FRAMES frames becomes, as a bare integer."""
    if checkpoint is not None:
        from videoqa.model.config import LlavaVideoConfig

        cfg = LlavaVideoConfig.from_pretrained(checkpoint)
        layout, grid = cfg.layout, cfg.grid
    else:
        layout = _layout_options(pool_mode, pool_stride, newline, slowfast_stride, frame_token)
    typer.echo(num_video_tokens(layout, frames, grid))


@model_app.command("init-tiny")
def init_tiny_cmd(
    out: Path = typer.Argument(..., help="Directory to write the checkpoint to."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed -> same bytes)."),
    pool_mode: str = typer.Option("average", "--pool-mode", help="average | bilinear | max"),
    pool_stride: int = typer.Option(2, "--pool-stride", min=1),
    newline: str = typer.Option("grid", "--newline", help="grid | frame | one_token | no_token"),
    slowfast_stride: int = typer.Option(1, "--slowfast-stride", min=1, help="1 = simple representation."),
    frame_token: bool = typer.Option(False, "--frame-token", help="Learned token after every frame."),
) -> None:
    """Write a random tiny LLaVA-Video checkpoint in the real format (for tests, demos and CI)."""
    from videoqa.model.tiny import init_tiny

    layout = _layout_options(pool_mode, pool_stride, newline, slowfast_stride, frame_token)
    typer.echo(init_tiny(out, seed=seed, layout=layout))
