"""`videoqa frames VIDEO`: sample frames and show what was taken, when, and how long it took."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `videoqa frames` to the root app."""
    app.command("frames")(frames)


def _parse_size(size: str | None) -> tuple[int, int] | None:
    if size is None or size == "native":
        return None
    try:
        w, h = (int(x) for x in size.lower().split("x"))
    except ValueError as err:
        raise typer.BadParameter(f"--size must look like 384x384 or 'native', got {size!r}") from err
    return w, h


def frames(
    video: Path = typer.Argument(..., exists=True, dir_okay=False, help="Video file."),
    num_frames: int | None = typer.Option(None, "--frames", min=1, help="N uniform frames (default 64)."),
    fps: float | None = typer.Option(None, "--fps", min=0.001, help="Sample at this rate instead."),
    max_frames: int = typer.Option(64, "--max-frames", min=1, help="Cap for --fps (above it: uniform)."),
    policy: str = typer.Option("fast", "--policy", help="fast (nearest keyframe within tolerance) | exact"),
    size: str | None = typer.Option("384x384", "--size", help="Output WxH, or 'native'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    sheet: Path | None = typer.Option(None, "--sheet", help="Write a contact-sheet PNG of the frames."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Threads for independent GOP runs (default: the CPU count)."
    ),
) -> None:
    """Sample frames from VIDEO and print their timestamps and timings."""
    # In-process, no worker pool: one file read once does not need crash isolation, and starting workers would
    # cost more than a fast sample takes.
    import os

    from videoqa.video.errors import VideoError
    from videoqa.video.sampler import sample_frames
    from videoqa.video.types import SamplingSpec

    if num_frames is not None and fps is not None:
        raise typer.BadParameter("use either --frames or --fps, not both")
    try:
        spec = SamplingSpec(
            num_frames=num_frames or 64,
            fps=fps,
            max_frames=max_frames,
            policy=policy,  # type: ignore[arg-type]
            size=_parse_size(size),
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    try:
        got = sample_frames(video, spec, workers=workers or os.cpu_count() or 1)
    except VideoError as err:
        typer.echo(f"error ({err.code}): {err}", err=True)
        raise typer.Exit(1) from err
    report = {
        "video": str(video),
        "info": got.info.public(),
        "policy": policy,
        "frames": len(got.timestamps),
        "timestamps": got.timestamps,
        "keyframe_hits": got.keyframe_hits,
        "timings": got.timings,
    }
    if sheet is not None:
        _write_sheet(got.frames, got.timestamps, sheet)
        report["sheet"] = str(sheet)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    # A header line, not a table title: rich wraps a title to the (narrow) table's width.
    console.print(f"{video.name}: {got.info.width}x{got.info.height} {got.info.codec}, {got.duration:.2f} s, {policy}")
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("time (s)", justify="right")
    for i, t in enumerate(got.timestamps):
        table.add_row(str(i), f"{t:.3f}")
    console.print(table)
    timings = got.timings
    console.print(
        f"probe {timings['probe_s'] * 1000:.1f} ms, decode {timings['decode_s'] * 1000:.1f} ms "
        f"({int(timings['frames_decoded'])} frames decoded, {got.keyframe_hits} keyframe hits)"
    )


def _write_sheet(frames, timestamps: list[float], path: Path, columns: int = 8) -> None:
    from PIL import Image, ImageDraw

    n, h, w = frames.shape[:3]
    rows = -(-n // columns)
    cols = min(columns, n)
    sheet = Image.new("RGB", (cols * w, rows * (h + 14)), "black")
    draw = ImageDraw.Draw(sheet)
    for i, (frame, t) in enumerate(zip(frames, timestamps, strict=True)):
        x, y = (i % columns) * w, (i // columns) * (h + 14)
        sheet.paste(Image.fromarray(frame), (x, y))
        draw.text((x + 2, y + h + 1), f"{t:.2f}s", fill="white")
    sheet.save(path)
