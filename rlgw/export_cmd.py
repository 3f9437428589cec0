"""`rlgw export`: scored traffic from the store as SFT rows and DPO pairs (jsonl or parquet).

    <out>/sft.<ext>   one row per completion whose episode scored >= --min-reward:
                      messages (prompt + the assistant reply), reward, episode_id, turn_id,
                      version, tenant, rubric
    <out>/dpo.<ext>   one row per prompt answered more than once with different rewards:
                      prompt, chosen, rejected (one-message lists), chosen/rejected reward

Messages are in the chat format `datasets` and TRL read: {"role", "content"} with content a
string, and an agent's tool use kept — an assistant message's `tool_calls` (each {"id", "type",
"function": {"name", "arguments"}}, the arguments as the JSON text the model wrote, so that rows
with different argument types share one schema) and a tool message's `tool_call_id` (and `name`).
Rows carry `tools`, the tool schemas offered, as one JSON string (or null), as TRL accepts them.
`datasets` fills keys a message lacks with null (TRL drops those before templating).
The reward of an episode is its newest score per rubric (re-scores supersede). The embedded
store is held by a running `rlgw up`; export from it when that process is stopped (or from a
ClickHouse server at any time).
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


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode() if value else ""


def _message(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": str(m.get("role", "")), "content": _text(m.get("content"))}
    calls = m.get("tool_calls")
    if isinstance(calls, list) and calls:
        out["tool_calls"] = [
            {
                "id": str(c.get("id") or ""),
                "type": "function",
                "function": {
                    "name": str((c.get("function") or {}).get("name") or ""),
                    "arguments": _text((c.get("function") or {}).get("arguments")),
                },
            }
            for c in calls
            if isinstance(c, dict)
        ]
    for key in ("tool_call_id", "name"):
        if isinstance(m.get(key), str):
            out[key] = m[key]
    return out


def _tools(request: dict[str, Any]) -> str | None:
    tools = request.get("tools")
    return orjson.dumps(tools).decode() if isinstance(tools, list) and tools else None


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
                    "tools": _tools(turn.request),
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
                    "tools": best["tools"],
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
