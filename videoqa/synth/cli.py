"""`videoqa synth ...`: the synthetic-data pipeline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

synth_app = typer.Typer(
    help="Synthetic LLaVA-Video-178K data: selection, recurrent captions, QA; procedural world + oracle.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add `videoqa synth ...` to the root app."""
    app.add_typer(synth_app, name="synth")


def _echo_stats(stats: dict) -> None:
    typer.echo(json.dumps({k: stats[k] for k in ("videos", "multiple_choice_per_type", "caption_levels")}, indent=1))


@synth_app.command("demo")
def demo(
    videos: int = typer.Option(8, "--videos", min=1, help="How many procedural videos the selection keeps."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same videos and records."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    preset: str = typer.Option("dynamic", "--preset", help="World preset: dynamic (paper-like) or simple."),
) -> None:
    """Procedural world + oracle teacher end to end: videos, ground truth, 178K-format records, report."""
    from videoqa.synth.demo import run_demo

    if preset not in ("dynamic", "simple"):
        raise typer.BadParameter(f"unknown preset {preset!r}; use dynamic or simple", param_hint="--preset")
    _echo_stats(run_demo(out, videos, seed, preset))  # type: ignore[arg-type]


def _shard(value: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError as err:
        raise typer.BadParameter(f"expected i/n like 0/4, got {value!r}", param_hint="--shard") from err
    if not 0 <= i < n:
        raise typer.BadParameter(f"need 0 <= i < n, got {value!r}", param_hint="--shard")
    return i, n


@synth_app.command("run")
def run_cmd(
    source: Path = typer.Option(..., "--source", help="Folder of videos or a manifest (.txt / .jsonl)."),
    out: Path = typer.Option(..., "--out", help="Output directory (resumable: run again to continue)."),
    teacher_url: str = typer.Option(None, "--teacher-url", help="OpenAI-compatible base URL, e.g. .../v1."),
    teacher_model: str = typer.Option(None, "--teacher-model", help="Model name at the teacher."),
    oracle: bool = typer.Option(False, "--oracle", help="Use the procedural ground truth instead of a model."),
    name: str = typer.Option("synth_v0", "--name", help="data_source of the records, prefix of the files."),
    shard: str = typer.Option("0/1", "--shard", help="i/n: this machine's share of the source."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Videos in flight."),
    send_video: bool = typer.Option(False, "--send-video", help="Send clips as a video (to our own gateway)."),
    no_selection: bool = typer.Option(False, "--no-selection", help="Keep every video (skip the filters)."),
    min_height: int = typer.Option(480, "--min-height", help="Resolution floor of the selection."),
    price_prompt: float = typer.Option(0.0, "--price-prompt", help="USD per 1M prompt tokens (cost report)."),
    price_completion: float = typer.Option(0.0, "--price-completion", help="USD per 1M completion tokens."),
) -> None:
    """Run the pipeline on real videos with a model teacher (API key from OPENAI_API_KEY), or --oracle."""
    from videoqa.synth.pipeline import RunConfig, finalize, run
    from videoqa.synth.selection import SelectionConfig

    i, n = _shard(shard)
    if oracle == bool(teacher_url):
        raise typer.BadParameter("give either --teacher-url (with --teacher-model) or --oracle")
    cfg = RunConfig(
        source=source,
        out=out,
        name=name,
        shard=(i, n),
        concurrency=concurrency,
        selection=None if no_selection else SelectionConfig(min_height=min_height),
    )

    async def go() -> dict:
        if oracle:
            from videoqa.synth.oracle import OracleTeacher

            return await run(cfg, OracleTeacher())
        from videoqa.synth.http_teacher import HTTPTeacher
        from videoqa.synth.teacher import LLMTeacher

        if not teacher_model:
            raise typer.BadParameter("--teacher-model is required with --teacher-url")
        async with HTTPTeacher(
            teacher_url,
            teacher_model,
            api_key=os.environ.get("OPENAI_API_KEY"),
            concurrency=concurrency,
            price_prompt_per_mtok=price_prompt,
            price_completion_per_mtok=price_completion,
        ) as client:
            return await run(cfg, LLMTeacher(client, send_video=send_video))

    import asyncio  # here, not at the top: every `videoqa` command imports this module

    counts = asyncio.run(go())
    typer.echo(json.dumps(counts))
    if n == 1:
        _echo_stats(finalize(out, name))
    else:
        typer.echo(f"shard {i}/{n} done; when every shard is, run: videoqa synth merge --out {out} --name {name}")


@synth_app.command("merge")
def merge(
    out: Path = typer.Option(..., "--out", help="The shared output directory of all shards."),
    name: str = typer.Option("synth_v0", "--name", help="data_source / file prefix used by the run."),
) -> None:
    """Write the record files, data mix and report from every shard's outcomes."""
    from videoqa.synth.pipeline import finalize

    _echo_stats(finalize(out, name))
