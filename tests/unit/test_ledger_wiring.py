"""open_ledger on the embedded default: local log + spool + recorder + chdb store + writer thread."""

import threading
from pathlib import Path

from ledger.config import LedgerConfig, Settings
from ledger.records import TOPIC_TURNS, Turn
from ledger.wiring import open_ledger


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
