"""`rlgw export` (rlgw/export_cmd.py): SFT rows and DPO pairs that HF `datasets` loads."""

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
