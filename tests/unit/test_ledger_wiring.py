"""open_ledger on the embedded default: local log + spool + recorder + chdb store + writer thread."""

import threading
from pathlib import Path

from ledger.config import LedgerConfig
from ledger.records import TOPIC_TURNS, Turn
from ledger.wiring import open_ledger, writer_group
from ledger.writer import GROUP
from rlgw.config import Settings


def test_embedded_default_records_reach_the_reader(store_data_dir: Path, store_database: str) -> None:
    settings = Settings(
        data_dir=store_data_dir,
        ledger=LedgerConfig(database=store_database, topic_prefix=f"{store_database}.", writer_linger_s=0.05),
    )
    ledger = open_ledger(settings)
    try:
        t = Turn(episode_id="ep-1", tenant="acme", model="m", version="v1")
        ledger.recorder.record(TOPIC_TURNS, t)
        assert ledger.recorder.flush(10)
        for _ in range(200):
            if ledger.reader.episode("ep-1", "acme") is not None:
                break
            threading.Event().wait(0.05)
        ep = ledger.reader.episode("ep-1", "acme")
        assert ep is not None and ep.turns[0].id == t.id
        assert ledger.reader.episode("ep-1", "other") is None
    finally:
        ledger.close()
    assert (store_data_dir / "ledger" / "log.sqlite").exists()
    assert (store_data_dir / "spool").is_dir()


def test_memory_ledger_for_tests() -> None:
    ledger = open_ledger(Settings(ledger=LedgerConfig(bus="memory", store="memory")))
    ledger.recorder.record(TOPIC_TURNS, Turn(episode_id="e", model="m", version="v"))
    assert ledger.recorder.flush(5)
    assert ledger.writer is None
    ledger.close()


def test_each_embedded_store_on_kafka_has_a_writer_group_of_its_own(tmp_path: Path) -> None:
    def group(data_dir: Path, **ledger: object) -> str:
        return writer_group(Settings(data_dir=data_dir, ledger=LedgerConfig(bus="kafka", **ledger)))  # type: ignore[arg-type]

    # a ClickHouse server is one store: its writers share the group (and so the partitions)
    assert group(tmp_path / "a", store="clickhouse", dsn="http://ch:8123") == GROUP
    assert group(tmp_path / "b", store="clickhouse", dsn="http://ch:8123") == GROUP
    # embedded stores are each one process's own: each receives every record, again after a restart
    a, b = group(tmp_path / "a", store="embedded"), group(tmp_path / "b", store="embedded")
    assert a != b and GROUP not in (a, b) and a == group(tmp_path / "a", store="embedded")


def test_rlgw_replay_rejected_sends_kept_records_into_the_local_log(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ledger import rejected
    from ledger.localbus import LocalBus
    from rlgw.cli import app

    turns = [Turn(episode_id=f"ep{i}", model="m", version="v1") for i in range(3)]
    kept = tmp_path / "spool" / "rejected"
    rejected.keep(kept, "rlgw.turns", [t.to_bytes() for t in turns])
    out = CliRunner().invoke(app, ["replay-rejected", "--data-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "rlgw.turns: 3 sent, 0 refused again" in out.output
    assert not list(kept.iterdir())
    bus = LocalBus(tmp_path / "ledger" / "log.sqlite")
    got = bus.consumer(["rlgw.turns"], "check").poll(10, timeout_s=1)
    assert [(m.key, m.value) for m in got] == [(t.episode_id, t.to_bytes()) for t in turns]
    bus.close()
    again = CliRunner().invoke(app, ["replay-rejected", "--data-dir", str(tmp_path)])
    assert again.exit_code == 0 and "nothing to replay" in again.output
