"""`videoqa model ...`: token layout math, tiny checkpoints, conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


@model_app.command("init-shaped")
def init_shaped_cmd(
    out: Path = typer.Argument(..., help="Output directory (original LlavaQwenForCausalLM format)."),
    like: str = typer.Option(..., "--like", help="llava-video-0.5b | llava-video-7b | llava-video-72b"),
    layers: int = typer.Option(1, "--layers", min=1, help="LM layers kept (the real model has 24 / 28 / 80)."),
    vocab: int = typer.Option(4096, "--vocab", min=1, help="LM vocabulary rows (the real one has ~152K)."),
    vision_layers: int = typer.Option(2, "--vision-layers", min=1, help="SigLIP layers stored (the real one: 26)."),
    intermediate: int | None = typer.Option(
        None, "--intermediate", min=1, help="Narrow only the LM MLP (default: the real width)."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 (lmms-lab releases are bfloat16)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a random checkpoint with a released LLaVA-Video model's real geometry (384 px SigLIP-so400m, the real LM
    and projector widths and head counts), depth and vocabulary cut, in the original LLaVA-NeXT format: convert it
    with `videoqa model convert` as a downloaded one."""
    import torch

    from videoqa.model.shaped import SHAPES, init_shaped

    if like not in SHAPES:
        raise typer.BadParameter(f"--like must be one of {', '.join(sorted(SHAPES))}, got {like!r}")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise typer.BadParameter(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    try:
        path = init_shaped(
            like,
            out,
            layers=layers,
            vocab=vocab,
            vision_layers=vision_layers,
            intermediate=intermediate,
            dtype=dtypes[dtype],
            seed=seed,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    typer.echo(path)


@model_app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="Original LLaVA-NeXT (LlavaQwenForCausalLM) or llava-hf llava_onevision dir."),
    out: Path = typer.Argument(..., help="Output directory (this project's format)."),
    dtype: str | None = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16 (default: keep)."),
    pool_mode: str | None = typer.Option(None, "--pool-mode", help="Override the carried-over layout."),
    newline: str | None = typer.Option(None, "--newline"),
    slowfast_stride: int | None = typer.Option(None, "--slowfast-stride", min=1),
    frame_token: bool | None = typer.Option(
        None,
        "--frame-token/--no-frame-token",
        help="Keep or drop the learned token after every frame (carried over from add_faster_video). Without it a "
        "SlowFast layout gives the paper's count (64 frames, s=3: 5768).",
    ),
    vision_heads: int | None = typer.Option(None, "--vision-heads", help="Tower heads if not SigLIP so400m."),
    max_frames: int = typer.Option(64, "--max-frames", min=1, help="Frames per video the engine profiles for."),
) -> None:
    """Convert a LLaVA-Video checkpoint into the served format, carrying its video layout over."""
    import dataclasses

    import torch

    from videoqa.model.convert import ConversionError, convert, detect

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, None: None}
    if dtype not in dtypes:
        raise typer.BadParameter(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
    layout = None
    if pool_mode or newline or slowfast_stride or frame_token is not None:
        try:
            source = detect(src)
            base = VideoLayout.from_llava_config(source.config) if source.kind == "original" else VideoLayout()
            changes: dict[str, Any] = {  # VideoLayout checks each value
                "pool_mode": pool_mode,
                "newline": newline,
                "slowfast_stride": slowfast_stride,
                "frame_token": frame_token,
            }
            layout = dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})
        except (ConversionError, LayoutError) as err:
            raise typer.BadParameter(str(err)) from err
    try:
        convert(
            src,
            out,
            dtype=dtypes[dtype],
            layout=layout,
            vision_heads=vision_heads,
            max_frames=max_frames,
            log=typer.echo,
        )
    except ConversionError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(out)
