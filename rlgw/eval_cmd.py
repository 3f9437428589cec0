"""`rlgw eval` and `rlgw eval-worker`: the eval gate's evaluation (rewards/evaluation.py) by
hand against a running gateway, and the gate's evaluator as a process of its own
(docs/versions.md, "The eval gate")."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from rlgw.options import ConfigOpt, RubricsOpt, settings_from
from rlgw.rubric_cmd import load_rubric_file
from rlgw.versions_cmd import DEFAULT_URL, KeyOpt, UrlOpt

console = Console()
DatasetOpt = Annotated[
    Path | None, typer.Option("--dataset", help="A JSONL file of tasks, added to the held-out prompts.")
]


def eval_settings(settings: Any, dataset: Path | None = None, n: int | None = None) -> Any:
    """The gate's evaluation settings, from the `[versions]` section."""
    from rewards.evaluation import EvalSettings

    v = settings.versions
    return EvalSettings(
        n=v.eval_prompts if n is None else n,
        margin=v.eval_margin,
        confidence=v.confidence,
        max_tokens=v.eval_max_tokens,
        concurrency=v.eval_concurrency,
        dataset=dataset,
    )


def eval_version(
    version: Annotated[str, typer.Option("--version", help="The version to evaluate.")],
    dataset: DatasetOpt = None,
    n: Annotated[
        int | None, typer.Option("--n", help="Held-out prompts (default: versions.eval_prompts).")
    ] = None,
    parent: Annotated[
        str | None, typer.Option("--parent", help="Compare with (default: its parent).")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    rubrics: RubricsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Evaluate VERSION against its parent on held-out prompts (and --dataset tasks) through a
    running gateway: a table per rubric and metric; exit 1 when the version is worse."""
    from rewards.eval_client import EvalRequestError
    from rewards.evaluation import evaluate_version

    settings = settings_from(config, **{"rewards.rubrics": rubrics})
    try:
        report = evaluate_version(
            url,
            version,
            load_rubric_file(settings.rewards.rubrics, settings),
            eval_settings(settings, dataset, n),
            parent=parent,
            admin_key=key,
        )
    except (EvalRequestError, ValueError, OSError) as exc:
        typer.secho(f"evaluation failed: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    console.print(report.table(), highlight=False)
    raise typer.Exit(1 if report.verdict == "worse" else 0)


def eval_worker(
    gateway: Annotated[
        str | None, typer.Option("--gateway", help="The controlling gateway (default: learner.admin_url).")
    ] = None,
    key: KeyOpt = None,
    dataset: DatasetOpt = None,
    rubrics: RubricsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Evaluate each version the gateway holds in `evaluating` and report the verdict (the
    eval gate's evaluator at scale-out, with versions.eval_gate = true; `rlgw up` runs one
    inside). The admin key: --key, $RLGW_ADMIN_KEY, else learner.admin_key."""
    from rewards.eval_worker import run_eval_worker

    settings = settings_from(config, **{"rewards.rubrics": rubrics})
    rubric_list = load_rubric_file(settings.rewards.rubrics, settings)
    url, key = gateway or settings.learner.admin_url, key or settings.learner.admin_key
    if not url:
        typer.secho("give --gateway URL (or learner.admin_url in the config)", fg="red", err=True)
        raise typer.Exit(2)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_eval_worker(url, key, rubric_list, eval_settings(settings, dataset), stop)
