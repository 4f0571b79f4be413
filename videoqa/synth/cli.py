"""`videoqa synth ...`: the synthetic-data pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

synth_app = typer.Typer(help="Synthetic LLaVA-Video-178K data: procedural world, oracle teacher.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `videoqa synth ...` to the root app."""
    app.add_typer(synth_app, name="synth")


@synth_app.command("demo")
def demo(
    videos: int = typer.Option(8, "--videos", min=1, help="How many procedural videos."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same videos and records."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
) -> None:
    """Procedural world + oracle teacher end to end: videos, ground truth, 178K-format records, data mix."""
    from videoqa.synth.demo import run_demo

    summary = run_demo(out, videos, seed)
    for kind, count in summary.items():
        typer.echo(f"{kind}: {count}")
