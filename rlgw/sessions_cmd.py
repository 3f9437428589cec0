"""`rlgw sessions …`: episode keys for harnesses that cannot set a header per task."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote

import typer

from rlgw.versions_cmd import DEFAULT_URL, UrlOpt, call

sessions_app = typer.Typer(
    no_args_is_help=True, help="Session keys: one key per episode, for agent harnesses."
)

TenantKeyOpt = Annotated[str | None, typer.Option("--key", envvar="RLGW_API_KEY", help="A tenant API key.")]


@sessions_app.command("create")
def create(
    url: UrlOpt = DEFAULT_URL,
    key: TenantKeyOpt = None,
    episode_id: Annotated[str | None, typer.Option("--episode-id", help="Default: a new id.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="The task tag its turns carry.")] = None,
    ttl_s: Annotated[float, typer.Option("--ttl-s", help="Seconds the key stays valid.")] = 24 * 3600,
) -> None:
    """Print a session key bound to a new episode, and the base URLs a harness can use instead."""
    body = {"episode_id": episode_id, "task": task, "ttl_s": ttl_s}
    data = call("POST", url, "/v1/sessions", key, {k: v for k, v in body.items() if v is not None})
    root = f"{url.rstrip('/')}/e/{quote(data['episode_id'], safe='')}"
    data["openai_base_url"], data["anthropic_base_url"] = f"{root}/v1", root
    typer.echo(json.dumps(data, indent=1))


@sessions_app.command("end")
def end(session_key: str = typer.Argument(..., help="The session key."), url: UrlOpt = DEFAULT_URL) -> None:
    """End a session: its episode ends (and is scored)."""
    typer.echo(json.dumps(call("POST", url, "/v1/sessions/end", session_key)))
