"""Options shared by the commands that start services, and config loading from them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from rlgw.config import Settings, load_settings

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (RLGW_* env vars override it).")
]
PortOpt = Annotated[int | None, typer.Option("--port", help="Port to listen on.")]
HostOpt = Annotated[str | None, typer.Option("--host", help="Address to bind.")]
UpstreamOpt = Annotated[
    list[str] | None, typer.Option("--upstream", help="OpenAI-compatible replica base URL (repeatable).")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where the embedded ledger and store live.")
]
RubricsOpt = Annotated[Path | None, typer.Option("--rubrics", help="Rubric file (TOML or Python).")]


def settings_from(config: Path | None, **flags: Any) -> Settings:
    """Load config and apply CLI flags; exit with a clear message when it is invalid."""
    try:
        settings = load_settings(config, **flags)
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(f"config error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.telemetry.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # a line per HTTP request drowns what matters (httpx2: the openai SDK's HTTP client)
    for chatty in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    return settings
