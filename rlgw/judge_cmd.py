"""`rlgw judge probe`: run the judge's probe set by hand (rewards/probes.py) and print its report.

With `--baseline FILE` (a report this command wrote with `--out`), it also compares: a false-
positive or control pass rate that moved more than `--max-drift` is a drift of the judge, and
the command exits 1. Every rubric worker also re-runs it on a schedule and publishes an alarm on
drift (rewards/judge_watch.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from rlgw.options import ConfigOpt, settings_from

judge_app = typer.Typer(no_args_is_help=True, help="Check the LLM judge.")


@judge_app.command("probe")
def judge_probe(
    url: Annotated[str | None, typer.Option("--url", help="The judge's OpenAI-compatible base URL.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="The judge model.")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Grade in [0, 1] that passes.")] = 0.5,
    out: Annotated[Path | None, typer.Option("--out", help="Write the report (JSON) here.")] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="A report to compare with.")] = None,
    max_drift: Annotated[float, typer.Option("--max-drift", help="Largest change of a rate.")] = 0.1,
    config: ConfigOpt = None,
) -> None:
    """Grade the injection / master-key probes and the correct controls with the judge."""
    from rewards.probes import drift, judge_report

    rewards = settings_from(config).rewards
    url, model = url or rewards.judge_url, model or rewards.judge_model
    if not url or not model:
        typer.secho(
            "no judge: give --url and --model (or rewards.judge_url / judge_model)", fg="red", err=True
        )
        raise typer.Exit(2)
    report = asdict(asyncio.run(judge_report(url, model, pass_threshold=threshold)))
    typer.echo(json.dumps(report, indent=1))
    if out is not None:
        out.write_text(json.dumps(report))
    if baseline is not None:
        moved = drift(report, json.loads(baseline.read_text()), max_drift)
        if moved:
            typer.secho(f"judge drift: {'; '.join(moved)}", fg="red", err=True)
            raise typer.Exit(1)
        typer.secho("no judge drift", fg="green", err=True)
