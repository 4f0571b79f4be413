"""The one `videoqa` command. Each package owns its subcommands and adds them through `register(app)`.

Heavy imports (torch, vLLM, the web app) happen inside the commands, so `videoqa --help` stays fast.
"""

from __future__ import annotations

import typer

from videoqa.model import cli as model_cli
from videoqa.service import cli as service_cli
from videoqa.synth import cli as synth_cli
from videoqa.training import cli as training_cli
from videoqa.video import cli as video_cli

app = typer.Typer(
    name="videoqa",
    help="Serve, feed and fine-tune LLaVA-Video video question-answering models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for _package_cli in (model_cli, video_cli, service_cli, synth_cli, training_cli):
    _package_cli.register(app)


if __name__ == "__main__":
    app()
