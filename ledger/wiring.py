"""Open the ledger a process needs from settings: bus, spool, recorder, store, store writer.

    bus    local  -> LocalBus  <data_dir>/ledger/log.sqlite      (embedded default)
           kafka  -> KafkaBus  ledger.bootstrap_servers
           memory -> MemoryBus                                  (tests)
    store  embedded   -> ClickHouseStore chdb://<data_dir>/store (embedded default)
           clickhouse -> ClickHouseStore ledger.dsn
           memory     -> MemoryStore                            (tests)

The spool lives in <data_dir>/spool (not for the memory bus). A store writer thread runs
here when `ledger.store_writer` says so (default: only with the embedded store, which only
this process may open). `Ledger.reader` is the store the gateway reads episodes from.

Writers that fill one store share a consumer group, so each record reaches one of them: the
`store-writer` group for a ClickHouse server. An embedded store is one process's own, so on
Kafka its writer's group is named for the store's path: every embedded store (the store
writer's, a learner's) receives every record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ledger.bus import Bus, MemoryBus
from ledger.config import LedgerSettings
from ledger.recorder import Recorder
from ledger.spool import Spool
from ledger.writer import GROUP, StoreWriter


@dataclass
class Ledger:
    bus: Bus
    recorder: Recorder
    reader: Any = None  # the store's reads (ledger.reads.Store), where this process has a store
    writer: StoreWriter | None = None

    def close(self) -> None:
        self.recorder.close()
        if self.writer is not None:
            self.writer.close()
        self.bus.close()
        if self.reader is not None:
            self.reader.close()


def open_bus(settings: LedgerSettings) -> Bus:
    cfg = settings.ledger
    if cfg.bus == "memory":
        return MemoryBus()
    if cfg.bus == "local":
        from ledger.localbus import LocalBus

        return LocalBus(
            settings.data_dir.resolve() / "ledger" / "log.sqlite",
            partitions=cfg.local_partitions,
            synchronous=cfg.local_synchronous,
        )
    from ledger.kafkabus import KafkaBus

    return KafkaBus(cfg)


def _embedded_path(settings: LedgerSettings) -> Path:
    return settings.data_dir.resolve() / "store"


def open_store(settings: LedgerSettings) -> Any:
    cfg = settings.ledger
    if cfg.store == "memory":
        from ledger.memstore import MemoryStore

        return MemoryStore()
    from ledger.store import ClickHouseStore

    if cfg.store == "embedded":
        path = _embedded_path(settings)
        path.mkdir(parents=True, exist_ok=True)
        return ClickHouseStore(f"chdb://{path}", database=cfg.database)
    assert cfg.dsn is not None  # checked when the config is assembled (rlgw.config)
    return ClickHouseStore(cfg.dsn, database=cfg.database)


def runs_writer(settings: LedgerSettings) -> bool:
    """Whether a process that opens the store also fills it (`ledger.store_writer`)."""
    cfg = settings.ledger
    return cfg.store_writer if cfg.store_writer is not None else cfg.store == "embedded"


def writer_group(settings: LedgerSettings) -> str:
    cfg = settings.ledger
    if cfg.store == "embedded" and cfg.bus == "kafka":
        digest = hashlib.sha1(str(_embedded_path(settings)).encode()).hexdigest()[:12]
        return f"{GROUP}-{digest}"
    return GROUP


def open_writer(
    settings: LedgerSettings, bus: Bus, store: Any, registry: CollectorRegistry | None = None
) -> StoreWriter:
    """The store writer (not started) moving `bus` records into `store`."""
    cfg = settings.ledger
    return StoreWriter(
        bus,
        store,
        topic_prefix=cfg.topic_prefix,
        batch=cfg.writer_batch,
        linger_s=cfg.writer_linger_s,
        group=writer_group(settings),
        registry=registry,
    )


def spool_dir(settings: LedgerSettings) -> Path:
    return settings.data_dir.resolve() / "spool"


def open_ledger(
    settings: LedgerSettings, registry: CollectorRegistry | None = None, *, record_queue: int = 10000
) -> Ledger:
    """The bus, the recorder (holding up to `record_queue` records in memory, the gateway's
    `gateway.record_queue`, before the spool) and, where this process has one, the store."""
    cfg = settings.ledger
    bus = open_bus(settings)
    spool = None
    if cfg.bus != "memory":
        spool = Spool(
            spool_dir(settings),
            fsync=cfg.spool_fsync,
            alarm_bytes=cfg.spool_alarm_bytes,
            registry=registry,
        )
    recorder = Recorder(
        bus,
        capacity=record_queue,
        topic_prefix=cfg.topic_prefix,
        batch=cfg.record_batch,
        spool=spool,
        linger_s=cfg.record_linger_ms / 1000.0,
        ack=cfg.ack,
        ack_timeout_s=cfg.ack_timeout_s,
        max_memory_bytes=cfg.memory_limit_bytes,
    )
    store = open_store(settings)
    writer = open_writer(settings, bus, store, registry).start() if runs_writer(settings) else None
    return Ledger(bus=bus, recorder=recorder.start(), reader=store, writer=writer)
