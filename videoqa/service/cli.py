"""`videoqa serve` (gateway; embedded engine or --engine-url) and `videoqa engine` (engine only)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from videoqa.service.settings import Settings


def _settings(load: Callable[..., Settings], **overrides: Any) -> Settings:
    """Settings, or exit 2 with the message naming each bad VIDEOQA_* variable (nothing starts)."""
    from videoqa.service.settings import SettingsError

    try:
        return load(**overrides)
    except SettingsError as err:
        typer.echo(f"videoqa: {err}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add `videoqa serve` and `videoqa engine` to the root app."""
    app.command("serve")(serve)
    app.command("engine")(engine)


def serve(
    model: Path | None = typer.Option(None, "--model", help="Checkpoint dir (default: the embedded demo model)."),
    engine_url: str | None = typer.Option(None, "--engine-url", help="Split mode: use a `videoqa engine` here."),
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port"),
    redis_url: str | None = typer.Option(None, "--redis-url", help="Shared state (default: in-process)."),
) -> None:
    """Run the gateway: REST video QA and the OpenAI-compatible API. Other settings: VIDEOQA_* env vars."""
    import uvicorn

    from videoqa.service.app import create_app
    from videoqa.service.requests import configure_logging
    from videoqa.service.settings import load_settings
    from videoqa.service.tracing import TracingUnavailableError
    from videoqa.service.tracing import require as require_tracing

    overrides = {
        "model": str(model) if model else None,
        "engine_url": engine_url,
        "host": host,
        "port": port,
        "redis_url": redis_url,
    }
    settings = _settings(load_settings, **{k: v for k, v in overrides.items() if v is not None})
    try:
        require_tracing(settings.otel_exporter)
    except TracingUnavailableError as err:
        typer.echo(f"videoqa: {err}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        log_level="info",
        access_log=False,  # the gateway logs each request itself, with the tenant (app.py)
    )


def engine(
    model: Path | None = typer.Option(None, "--model", help="Checkpoint dir (default: the embedded demo model)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8100, "--port"),
) -> None:
    """Run only the engine behind an internal HTTP API, for gateways started with --engine-url."""
    import uvicorn

    from videoqa.service.engine_server import create_engine_app
    from videoqa.service.settings import load_settings

    settings = _settings(load_settings)
    try:
        local = settings.local_engine(model)
    except ValueError as err:  # e.g. an unknown name in VIDEOQA_ENGINE_ARGS
        typer.echo(f"videoqa engine: {err}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.engine_api_token:
        logging.getLogger("videoqa.engine").warning(
            "VIDEOQA_ENGINE_API_TOKEN is not set: anyone who can reach port %d can use this engine", port
        )
    uvicorn.run(
        create_engine_app(local, token=settings.engine_api_token),
        host=host,
        port=port,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        log_level="info",
    )
