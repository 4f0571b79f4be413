"""`videoqa train CONFIG.yaml`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `videoqa train` to the root app."""
    app.command("train")(train)


def train(
    config: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="Recipe YAML (its first line: the launch command)."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Override the recipe's max_steps."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Override the recipe's output_dir."),
) -> None:
    """Fine-tune a checkpoint on LLaVA-Video-178K-format data; writes a checkpoint `videoqa serve` serves as is."""
    from videoqa.training.config import load_config
    from videoqa.training.train import train as run

    overrides = {
        k: v for k, v in {"max_steps": max_steps, "output_dir": str(output_dir) if output_dir else None}.items() if v
    }
    try:
        cfg = load_config(config, overrides)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    typer.echo(run(cfg))
