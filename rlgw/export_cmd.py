"""`rlgw export`: scored traffic from the store as SFT rows and DPO pairs (jsonl or parquet).

    <out>/sft.<ext>   one row per completion whose episode scored >= --min-reward:
                      messages (prompt + the assistant reply), reward, episode_id, turn_id,
                      version, tenant, rubric
    <out>/dpo.<ext>   one row per prompt answered more than once with different rewards:
                      prompt, chosen, rejected (one-message lists), chosen/rejected reward

Messages are normalised to {"role", "content"} strings so that `datasets.load_dataset("json")`
and `("parquet")` read every row with one schema. The reward of an episode is its newest
score per rubric (re-scores supersede). The embedded store is held by a running `rlgw up`;
export from it when that process is stopped (or from a ClickHouse server at any time).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import typer

from rlgw.options import ConfigOpt, DataDirOpt, settings_from


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value).timestamp()


def _message(m: dict[str, Any]) -> dict[str, str]:
    content = m.get("content")
    text = content if isinstance(content, str) else orjson.dumps(content).decode() if content else ""
    return {"role": str(m.get("role", "")), "content": text}


def collect(
    store: Any, *, since: float | None, tenant: str | None, rubric: str | None, min_reward: float | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """SFT rows and DPO pairs from every scored episode in the store."""
    newest: dict[tuple[str, str, str], Any] = {}
    after = None
    while batch := store.scored(
        after, since=since, tenant=tenant, rubric=rubric, limit=1000, settle_s=0, turns_grace_s=0
    ):
        for s in batch:
            key = (s.score.tenant, s.score.episode_id, s.score.rubric)
            old = newest.get(key)
            if old is None or (s.score.feedback_seq, s.score.created_at) >= (
                old.score.feedback_seq,
                old.score.created_at,
            ):
                newest[key] = s
        after = batch[-1].position
    sft: list[dict[str, Any]] = []
    by_prompt: dict[bytes, list[dict[str, Any]]] = {}
    for s in newest.values():
        reward = s.score.total
        if reward is None:
            continue
        for turn in s.episode.turns:
            prompt = [_message(m) for m in turn.request.get("messages", [])]
            for choice in turn.choices:
                reply = _message(choice.message or {"role": "assistant"})
                row = {
                    "messages": [*prompt, reply],
                    "reward": float(reward),
                    "episode_id": turn.episode_id,
                    "turn_id": turn.id,
                    "version": turn.version,
                    "tenant": turn.tenant,
                    "rubric": s.score.rubric,
                }
                if min_reward is None or reward >= min_reward:
                    sft.append(row)
                by_prompt.setdefault(orjson.dumps([s.score.rubric, prompt]), []).append(row)
    dpo = []
    for rows in by_prompt.values():
        best = max(rows, key=lambda r: r["reward"])
        worst = min(rows, key=lambda r: r["reward"])
        if best["reward"] > worst["reward"]:
            dpo.append(
                {
                    "prompt": best["messages"][:-1],
                    "chosen": best["messages"][-1:],
                    "rejected": worst["messages"][-1:],
                    "chosen_reward": best["reward"],
                    "rejected_reward": worst["reward"],
                    "tenant": best["tenant"],
                    "rubric": best["rubric"],
                }
            )
    return sft, dpo


def write_rows(rows: list[dict[str, Any]], path: Path, fmt: str) -> None:
    if fmt == "jsonl":
        with open(path, "wb") as fh:
            for row in rows:
                fh.write(orjson.dumps(row) + b"\n")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def export(
    format: str = typer.Option("jsonl", "--format", help="jsonl | parquet"),
    since: str | None = typer.Option(None, "--since", help="Only scores from then on (ISO time or unix s)."),
    min_reward: float | None = typer.Option(None, "--min-reward", help="SFT rows need at least this reward."),
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's episodes."),
    rubric: str | None = typer.Option(None, "--rubric", help="Only scores of this rubric."),
    out: Path = typer.Option(Path("export"), "--out", help="Folder for sft.<ext> and dpo.<ext>."),
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write scored traffic as SFT rows and DPO pairs, loadable by Hugging Face `datasets`."""
    if format not in ("jsonl", "parquet"):
        typer.secho("--format is jsonl or parquet", fg="red", err=True)
        raise typer.Exit(2)
    from ledger.wiring import open_store

    settings = settings_from(config, data_dir=data_dir)
    try:
        store = open_store(settings)
    except RuntimeError as exc:  # StoreError: the embedded store is held by another process
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    try:
        sft, dpo = collect(store, since=_since(since), tenant=tenant, rubric=rubric, min_reward=min_reward)
    finally:
        store.close()
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("sft", sft), ("dpo", dpo)):
        write_rows(rows, out / f"{name}.{format}", format)
    typer.echo(f"wrote {len(sft)} SFT rows and {len(dpo)} DPO pairs to {out}")
