"""The store writer: batches, commits after insert, never doubles, dead-letters garbage."""

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ledger.localbus import LocalBus
from ledger.records import Record, Turn, parse_record
from ledger.writer import StoreWriter


def publish_turns(bus: LocalBus, n: int, start: int = 0) -> list[Turn]:
    turns = [Turn(episode_id=f"ep{i % 10}", model="m", version="v1") for i in range(start, start + n)]
    bus.publish("p.turns", [(t.key, t.to_bytes()) for t in turns])
    return turns


class CrashAfterInsert(Exception):
    pass


class CrashingStore:
    """The real store, but the process 'dies' after the insert and before the commit."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def write(self, records: list[Record], bodies: list[bytes] | None = None) -> None:
        half = len(records) // 2
        self.store.write(records[:half], bodies[:half] if bodies else None)
        raise CrashAfterInsert


def test_killed_mid_batch_then_restarted_none_missing_none_doubled(tmp_path: Path, store: Any) -> None:
    bus = LocalBus(tmp_path / "log.sqlite", partitions=2)
    turns = publish_turns(bus, 500)
    first = StoreWriter(bus, store, topic_prefix="p.", batch=200, linger_s=0.2)
    assert first.step() == 200
    crashing_store: Any = CrashingStore(store)
    crashing = StoreWriter(bus, crashing_store, topic_prefix="p.", batch=200, linger_s=0.2)
    try:
        crashing.step()
    except CrashAfterInsert:
        pass
    # the first writer's process is gone too: a fresh one resumes from the committed offsets
    bus.close()
    bus = LocalBus(tmp_path / "log.sqlite", partitions=2)
    second = StoreWriter(bus, store, topic_prefix="p.", batch=200, linger_s=0.2)
    while second.step():
        pass
    assert store.counts()["turns"] == 500
    got = store._query(f"SELECT id FROM {store.db}.turns FINAL")
    assert sorted(r[0] for r in got) == sorted(t.id for t in turns)
    raw = store._query(f"SELECT count() FROM {store.db}.turns")[0][0]
    assert raw >= 500  # the replayed half-batch is on disk twice, and reads once
    bus.close()


def test_garbage_is_dead_lettered_and_the_rest_written(tmp_path: Path, store: Any) -> None:
    bus = LocalBus(tmp_path / "log.sqlite")
    publish_turns(bus, 5)
    bus.publish("p.turns", [("bad", b"\x00not json"), ("bad2", b'{"kind": "nope"}')])
    publish_turns(bus, 5, start=5)
    registry = CollectorRegistry()
    writer = StoreWriter(bus, store, topic_prefix="p.", batch=100, linger_s=0.2, registry=registry)
    assert writer.step() == 10
    assert store.counts()["turns"] == 10
    letters = [parse_record(m.value) for m in bus.consumer(["p.dead-letters"], "t").poll(10, timeout_s=0)]
    assert len(letters) == 2
    assert letters[0].kind == "dead_letter" and "unparseable" in letters[0].reason  # type: ignore[attr-defined]
    assert letters[0].payload.endswith("not json")  # type: ignore[attr-defined]
    assert registry.get_sample_value("rlgw_dead_letters_total") == 2
    assert writer.step() == 0  # committed: nothing comes back
    bus.close()


def test_writer_thread_moves_records_and_stops(tmp_path: Path, store: Any) -> None:
    bus = LocalBus(tmp_path / "log.sqlite")
    writer = StoreWriter(bus, store, topic_prefix="p.", batch=50, linger_s=0.05).start()
    publish_turns(bus, 120)
    for _ in range(200):
        if store.counts()["turns"] == 120:
            break
        threading_wait(0.05)
    writer.close()
    assert store.counts()["turns"] == 120
    bus.close()


def threading_wait(s: float) -> None:
    import threading

    threading.Event().wait(s)
