"""`rlgw rubric test` and `rlgw rubric backfill` on recorded episodes; backfill on the store seam."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.bus import MemoryBus
from ledger.localbus import LocalBus
from ledger.memstore import MemoryStore
from ledger.records import EpisodeEnd, Feedback, Score, Turn, TurnChoice, parse_record
from rewards import load_rubrics
from rewards.authoring import backfill
from rlgw.rubric_cmd import parse_since, rubric_app

RUBRICS = """
[[rubric]]
name = "geo"
[[rubric.scorer]]
use = "contains"
reference = "expected"
[[rubric.scorer]]
use = "feedback"
weight = 0
"""


def records() -> list[object]:
    out: list[object] = []
    for i, answer in enumerate(["Paris", "Lyon", "Paris!"]):
        eid = f"ep{i}"
        out.append(
            Turn(
                episode_id=eid,
                model="m",
                version="v1",
                created_at=1000.0 + i,
                metadata={"expected": "paris"},
                request={"messages": [{"role": "user", "content": "capital of France?"}]},
                choices=[TurnChoice(message={"role": "assistant", "content": answer})],
            )
        )
        out.append(Feedback(episode_id=eid, name="thumbs", value=i != 1))
        out.append(EpisodeEnd(episode_id=eid))
    return out


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    rubric = tmp_path / "geo.toml"
    rubric.write_text(RUBRICS)
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_bytes(b"\n".join(r.to_bytes() for r in records()))  # type: ignore[attr-defined]
    return rubric, jsonl


def test_rubric_test_prints_scores_next_to_the_conversation(files: tuple[Path, Path]) -> None:
    rubric, jsonl = files
    out = CliRunner().invoke(rubric_app, ["test", str(rubric), "--records", str(jsonl), "--episode", "ep1"])
    assert out.exit_code == 0, out.output
    assert "Lyon" in out.output and "contains" in out.output and "total=0.0" in out.output
    out = CliRunner().invoke(rubric_app, ["test", str(rubric), "--records", str(jsonl), "--sample", "2"])
    assert out.exit_code == 0 and "episode ep2" in out.output and "episode ep0" not in out.output
    out = CliRunner().invoke(rubric_app, ["test", str(rubric), "--records", str(jsonl), "--episode", "nope"])
    assert out.exit_code == 1


def test_rubric_backfill_publishes_scores_to_the_bus(files: tuple[Path, Path], tmp_path: Path) -> None:
    rubric, jsonl = files
    args = ["backfill", "geo", "--rubrics", str(rubric), "--records", str(jsonl), "--data-dir", str(tmp_path)]
    out = CliRunner().invoke(rubric_app, [*args, "--since", "1001"])
    assert out.exit_code == 0, out.output
    assert "published 2 scores" in out.output
    bus = LocalBus(tmp_path / "ledger" / "log.sqlite")
    try:
        got = [parse_record(m.value) for m in bus.consumer(["rlgw.scores"], "t").poll(100, 0)]
    finally:
        bus.close()
    assert sorted((s.episode_id, s.total) for s in got if isinstance(s, Score)) == [
        ("ep1", 0.0),
        ("ep2", 1.0),
    ]
    assert CliRunner().invoke(rubric_app, [*args[:1], "nope", *args[2:]]).exit_code == 2


async def test_backfill_reads_the_ledger_store(files: tuple[Path, Path]) -> None:
    store = MemoryStore()
    store.write(records())  # type: ignore[arg-type]
    (geo,) = load_rubrics(files[0])
    bus, seen = MemoryBus(), list[int]()
    assert await backfill(geo, store, bus, progress=seen.append) == 3
    assert seen == [1, 2, 3]
    again = await backfill(geo, store, bus)  # same version, same episodes: the same ids again
    ids = [parse_record(m.value).id for m in bus.messages("scores")]
    assert again == 3 and len(set(ids)) == 3


def test_parse_since() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1700000000") == 1_700_000_000.0
    assert parse_since("2026-01-31") is not None and parse_since(None) is None
