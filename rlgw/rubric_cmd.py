"""`rlgw rubric-worker`, `rlgw rubric test` and `rlgw rubric backfill`: wiring only."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rlgw.options import ConfigOpt, DataDirOpt, RubricsOpt, settings_from

rubric_app = typer.Typer(no_args_is_help=True, help="Author and backfill reward rubrics.")
console = Console()
RecordsOpt = Annotated[
    Path | None, typer.Option("--records", help="Read episodes from a JSONL file of records, not the store.")
]


def rubric_worker(
    config: ConfigOpt = None,
    rubrics: RubricsOpt = None,
    data_dir: DataDirOpt = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics.")
    ] = None,
) -> None:
    """Score closed episodes with the rubrics, as one member of the workers' consumer group."""
    from prometheus_client import CollectorRegistry, start_http_server

    from ledger.tracing import setup_tracing
    from ledger.wiring import open_bus, open_store
    from rewards.metrics import WorkerMetrics
    from rewards.worker import run_worker

    settings = settings_from(config, **{"rewards.rubrics": rubrics, "data_dir": data_dir})
    rubric_list = load_rubric_file(settings.rewards.rubrics, settings)
    registry = CollectorRegistry()
    if metrics_port is not None:
        start_http_server(metrics_port, registry=registry)
    bus = open_bus(settings)
    # the embedded store belongs to the `rlgw up` process; a ClickHouse server may be shared
    source = open_store(settings) if settings.ledger.store == "clickhouse" else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        run_worker(
            settings,
            bus,
            stop,
            rubrics=rubric_list,
            source=source,
            metrics=WorkerMetrics(registry),
            tracer=setup_tracing(settings.telemetry, "rlgw-rubric-worker"),
        )
    finally:
        bus.close()
        if source is not None:
            source.close()


@rubric_app.command("test")
def rubric_test(
    file: Annotated[Path, typer.Argument(help="Rubric file (TOML or Python).")],
    episode: Annotated[str | None, typer.Option("--episode", help="Episode id to score.")] = None,
    sample: Annotated[int, typer.Option("--sample", help="Score the N most recent episodes.")] = 5,
    records: RecordsOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Dry-run a rubric file on recorded episodes: each function's score next to the conversation."""
    from rewards.authoring import dry_run
    from rewards.view import EpisodeView, text_of

    settings = settings_from(config, data_dir=data_dir)
    rubrics = load_rubric_file(file, settings)
    source = _source(settings, records)
    if episode is not None:
        found = source.episode(episode)
        if found is None:
            typer.secho(f"episode {episode} not found", fg="red", err=True)
            raise typer.Exit(1)
        episodes = [found]
    else:
        episodes = list(source.episodes(since=None, limit=sample))
    for ep, scores in asyncio.run(dry_run(rubrics, episodes)):
        console.rule(f"episode {ep.episode_id}  tenant={ep.tenant}")
        for m in EpisodeView.of(ep).messages:
            console.print(f"[bold]{m.get('role')}[/bold]: {text_of(m.get('content'))[:500]}", markup=True)
        if not scores:
            console.print("[yellow]no rubric matches this episode[/yellow]")
        for s in scores:
            table = Table(title=f"{s.rubric}@{s.rubric_version}  total={s.total}")
            for col in ("function", "weight", "value", "error"):
                table.add_column(col)
            for name, value in s.values.items():
                table.add_row(name, f"{s.weights[name]:g}", str(value), s.errors.get(name, ""))
            console.print(table)


@rubric_app.command("backfill")
def rubric_backfill(
    name: Annotated[str, typer.Argument(help="Name of the rubric to re-score with.")],
    since: Annotated[str | None, typer.Option("--since", help="e.g. 2h, 7d, 2026-01-31, unix secs.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Episodes at most.")] = 1_000_000,
    rubrics: RubricsOpt = None,
    records: RecordsOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Re-score stored episodes with the rubric's current version, publishing new Scores."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ledger.wiring import open_bus
    from rewards.authoring import backfill

    settings = settings_from(config, **{"rewards.rubrics": rubrics, "data_dir": data_dir})
    chosen = [r for r in load_rubric_file(settings.rewards.rubrics, settings) if r.name == name]
    if not chosen:
        typer.secho(f"no rubric named {name!r} in {settings.rewards.rubrics}", fg="red", err=True)
        raise typer.Exit(2)
    source = _source(settings, records)
    episodes = list(source.episodes(since=parse_since(since), limit=limit))
    bus = open_bus(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"{name}@{chosen[0].version}", total=len(episodes))
            n = asyncio.run(
                backfill(
                    chosen[0],
                    _Listed(episodes),
                    bus,
                    topic_prefix=settings.ledger.topic_prefix,
                    progress=lambda done: progress.update(task, completed=done),
                )
            )
    finally:
        bus.close()
    console.print(f"published {n} scores of {name}@{chosen[0].version} for {len(episodes)} episodes")


class _Listed:
    """Episodes already read, served through the EpisodeSource seam (so the bar knows the total)."""

    def __init__(self, episodes: list[Any]) -> None:
        self._episodes = episodes

    def episode(self, episode_id: str, tenant: str | None = None) -> Any:
        return next((e for e in self._episodes if e.episode_id == episode_id), None)

    def episodes(self, since: float | None = None, limit: int = 100) -> list[Any]:
        return self._episodes


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """'90m' / '2h' / '7d' ago, an ISO date or time, or unix seconds."""
    if text is None:
        return None
    now = time.time() if now is None else now
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip()):
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise typer.BadParameter(f"--since {text!r}: use 2h, 7d, 2026-01-31 or unix seconds") from exc


def load_rubric_file(path: Path | None, settings: Any) -> list[Any]:
    from rewards.loader import RubricFileError, load_rubrics

    if path is None:
        typer.secho("no rubrics: give --rubrics PATH (or rewards.rubrics in the config)", fg="red", err=True)
        raise typer.Exit(2)
    try:
        return load_rubrics(path, settings.rewards)
    except RubricFileError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from exc


def _source(settings: Any, records: Path | None) -> Any:
    if records is not None:
        from rewards.source import MemoryEpisodes

        return MemoryEpisodes.from_jsonl(records)
    from ledger.wiring import open_store

    return open_store(settings)
