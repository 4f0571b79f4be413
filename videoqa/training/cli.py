"""`videoqa train CONFIG.yaml`, `videoqa consolidate`, `videoqa eval`, `videoqa lmms-task`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `videoqa train` to the root app."""
    app.command("train")(train)
    app.command("eval")(evaluate)
    # A command of its own, not `videoqa train consolidate`: `train` takes the recipe as its argument, and a
    # typer group cannot also take one.
    app.command("consolidate")(consolidate)
    app.command("lmms-task")(lmms_task)


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


def consolidate(
    checkpoint: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="A sharded checkpoint: RUN_DIR/checkpoints/step-N (strategy: fsdp)."
    ),
    out_dir: Path = typer.Argument(..., help="Where the servable checkpoint goes (config, safetensors, tokenizer)."),
) -> None:
    """Turn a sharded FSDP checkpoint into the checkpoint `videoqa serve` serves, in one process (no torchrun).
    Rebuilds the model from RUN_DIR/config.yaml: run it where the recipe's relative paths hold (where training
    was launched). Needs the full model in CPU memory."""
    from videoqa.training.train import consolidate as run

    try:
        typer.echo(run(checkpoint, out_dir))
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="CHECKPOINT") from err


def evaluate(
    model: str = typer.Option("demo", "--model", help="Checkpoint folder, or 'demo' for the embedded one."),
    data: Path = typer.Option(..., "--data", exists=True, help="Data folder (data_mix.yaml), mix YAML or 178K json."),
    json_out: Path | None = typer.Option(None, "--json", help="Write JSON here (+ .md table and .png chart)."),
    frames: int | None = typer.Option(None, "--frames", min=1, help="Frames per video (default: the checkpoint's)."),
    max_open_ended: int = typer.Option(200, "--max-open-ended", min=0, help="Open-ended questions to score."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="Engine dtype, e.g. bfloat16 (default: the checkpoint's own, from its config.json)."
    ),
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", "--tp", min=1, help="GPUs per model."),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", min=256, help="Engine context (default: what the longest prompt needs)."
    ),
) -> None:
    """Multiple-choice accuracy per question type (and open-ended token F1) through the vLLM engine."""
    import asyncio

    from videoqa.model.tiny import DEMO_CHECKPOINT
    from videoqa.training.evaluate import ContextTooShortError, evaluate_engine, markdown, write_reports

    checkpoint = DEMO_CHECKPOINT if model == "demo" else Path(model)
    if not (checkpoint / "config.json").is_file():
        hint = "run `make demo-checkpoint`" if model == "demo" else "pass a checkpoint folder with config.json"
        raise typer.BadParameter(f"{checkpoint} is not a checkpoint; {hint}", param_hint="--model")
    try:
        result = asyncio.run(
            evaluate_engine(
                checkpoint,
                data,
                frames,
                max_open_ended,
                dtype=dtype,
                tensor_parallel_size=tensor_parallel_size,
                max_model_len=max_model_len,
            )
        )
    except ContextTooShortError as err:  # the message says how many frames fit
        raise typer.BadParameter(str(err), param_hint="--frames") from err
    typer.echo(markdown(result))
    if json_out:
        write_reports(result, json_out)


def lmms_task(
    data: Path = typer.Argument(..., exists=True, help="Data folder (data_mix.yaml), mix YAML or 178K json."),
    out: Path = typer.Option(..., "--out", help="Folder to write the task into (lmms-eval's --include_path)."),
    name: str = typer.Option("videoqa_mc", "--name", help="Task name (lmms-eval's --tasks)."),
) -> None:
    """Write DATA's multiple-choice questions as an lmms-eval task, scored by generated letter as `videoqa eval`."""
    from videoqa.training.lmms.task import write_task

    try:
        path = write_task(data, out, name)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from err
    typer.echo(f"wrote {path}; run: lmms-eval --model videoqa --include_path {out} --tasks {name} ...")
