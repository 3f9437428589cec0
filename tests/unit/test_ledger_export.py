"""`rlgw export` (rlgw/export_cmd.py): SFT rows and DPO pairs that HF `datasets` loads."""

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ledger.records import Score, Turn, TurnChoice
from rlgw.export_cmd import export


def seed(store: Any) -> None:
    recs: list[Any] = []
    for i, (answer, reward, tenant) in enumerate(
        [("good", 1.0, "a"), ("bad", 0.0, "a"), ("meh", 0.5, "a"), ("other", 1.0, "b")]
    ):
        t = Turn(
            episode_id=f"e{i}",
            tenant=tenant,
            model="m",
            version="v1",
            request={"messages": [{"role": "user", "content": "2+2?"}]},
            choices=[TurnChoice(message={"role": "assistant", "content": answer})],
        )
        recs += [
            t,
            Score(episode_id=t.episode_id, tenant=tenant, rubric="r", rubric_version="1", total=reward),
        ]
    store.write(recs)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_loads_with_datasets(
    fmt: str, store: Any, store_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    seed(store)
    monkeypatch.setenv("RLGW_LEDGER__DATABASE", store.db)
    app = typer.Typer()
    app.command()(export)
    out = tmp_path / "out"
    args = ["--format", fmt, "--min-reward", "0.5", "--tenant", "a", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(store_data_dir)])
    assert result.exit_code == 0, result.output
    loader = "json" if fmt == "jsonl" else "parquet"
    sft = datasets.load_dataset(loader, data_files=str(out / f"sft.{fmt}"), split="train")
    assert sorted(r["messages"][-1]["content"] for r in sft) == ["good", "meh"]
    assert all(r["reward"] >= 0.5 and r["tenant"] == "a" for r in sft)
    dpo = datasets.load_dataset(loader, data_files=str(out / f"dpo.{fmt}"), split="train")
    assert len(dpo) == 1
    assert dpo[0]["chosen"][0]["content"] == "good" and dpo[0]["rejected"][0]["content"] == "bad"
    assert dpo[0]["prompt"] == [{"role": "user", "content": "2+2?"}]


CALL = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_keeps_tool_calls_and_results(
    fmt: str, store: Any, store_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    ask = [{"role": "user", "content": "1+2?"}]
    used = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
    ]
    recs: list[Any] = []
    cases: list[tuple[list[Any], dict[str, Any], float]] = [
        (ask, {"role": "assistant", "content": None, "tool_calls": [CALL]}, 1.0),
        (used, {"role": "assistant", "content": "3"}, 1.0),
        (ask, {"role": "assistant", "content": "4"}, 0.0),
    ]
    for i, (request, reply, reward) in enumerate(cases):
        t = Turn(
            episode_id=f"t{i}",
            model="m",
            version="v1",
            request={"messages": request, "tools": TOOLS},
            choices=[TurnChoice(message=reply)],
        )
        recs += [t, Score(episode_id=t.episode_id, rubric="r", rubric_version="1", total=reward)]
    store.write(recs)
    monkeypatch.setenv("RLGW_LEDGER__DATABASE", store.db)
    app = typer.Typer()
    app.command()(export)
    out = tmp_path / "out"
    args = ["--format", fmt, "--min-reward", "1", "--out", str(out), "--data-dir", str(store_data_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    loader = "json" if fmt == "jsonl" else "parquet"
    sft = datasets.load_dataset(loader, data_files=str(out / f"sft.{fmt}"), split="train")
    rows = sorted(sft, key=lambda r: len(r["messages"]))
    call = rows[0]["messages"][-1]
    assert call["role"] == "assistant" and call["tool_calls"] == [CALL]
    tool = rows[1]["messages"][2]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "c1" and tool["content"] == "3"
    assert rows[1]["messages"][1]["tool_calls"] == [CALL] and rows[1]["messages"][-1]["content"] == "3"
    assert all(json.loads(r["tools"]) == TOOLS for r in rows)
    dpo = datasets.load_dataset(loader, data_files=str(out / f"dpo.{fmt}"), split="train")
    [pair] = list(dpo)
    assert pair["chosen"][0]["tool_calls"] == [CALL] and pair["rejected"][0]["content"] == "4"
