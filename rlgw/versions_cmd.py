"""`rlgw versions …`: list, promote, roll back and pin model versions through the admin API."""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from ledger.training import TRAINING_KEY

versions_app = typer.Typer(no_args_is_help=True, help="Model versions: list, promote, roll back, pin.")
console = Console()

UrlOpt = Annotated[str, typer.Option("--url", envvar="RLGW_URL", help="The gateway's root URL.")]
KeyOpt = Annotated[str | None, typer.Option("--key", envvar="RLGW_ADMIN_KEY", help="An admin API key.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Recorded with the decision.")]
DEFAULT_URL = os.environ.get("RLGW_URL", "http://127.0.0.1:8000")


def call(method: str, url: str, path: str, key: str | None, body: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.request(method, url.rstrip("/") + path, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        typer.secho(f"cannot reach the gateway at {url}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text[:300]
        typer.secho(f"{resp.status_code}: {message}", fg="red", err=True)
        raise typer.Exit(1)
    return resp.json()


@versions_app.command("list")
def list_versions(url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Every version: status, traffic share, live reward with its interval, episodes, parent."""
    data = call("GET", url, "/admin/versions", key)
    table = Table(
        "version", "status", "share", "reward", "interval", "episodes", "parent", "eval", "data window"
    )
    for v in data["versions"]:
        interval = v["reward_interval"]
        table.add_row(
            v["id"] + (" (pinned)" if v["pinned"] else ""),
            v["status"],
            f"{v['share']:.0%}",
            "-" if v["reward"] is None else f"{v['reward']:.3f}",
            "-" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]",
            str(v["episodes"]),
            v["parent"] or "-",
            "-" if not v.get("eval") else f"{v['eval']['verdict']}: {v['eval']['reason']}",
            ", ".join(f"{k}={val}" for k, val in (v["data_window"] or {}).items() if k != TRAINING_KEY)
            or "-",
        )
    console.print(table)


@versions_app.command()
def promote(
    version: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None, reason: ReasonOpt = "operator"
) -> None:
    """Serve VERSION to all new episodes."""
    out = call("POST", url, f"/admin/versions/{version}/promote", key, {"reason": reason})
    console.print(f"{out['version']} is {out['status']}")


@versions_app.command()
def rollback(
    version: Annotated[
        str | None, typer.Argument(help="Default: the canary, else the serving version.")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    reason: ReasonOpt = "operator",
) -> None:
    """Take a version out of traffic at once (a routing change: adapters stay loaded)."""
    path = f"/admin/versions/{version}/rollback" if version else "/admin/rollback"
    out = call("POST", url, path, key, {"reason": reason})
    console.print(f"{out['version']} rolled back; serving {out['serving']}")


@versions_app.command()
def pin(
    version: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None, off: bool = typer.Option(False, "--off")
) -> None:
    """Hold automatic decisions on VERSION (--off releases it)."""
    out = call("POST", url, f"/admin/versions/{version}/{'unpin' if off else 'pin'}", key, {})
    console.print(f"{out['version']} pinned={out['pinned']}")
