"""The store writer: a consumer group that moves records from the bus into the store.

It gathers records until `batch` of them or `linger_s` has passed, inserts them, and only
then commits the group's offsets (at-least-once). A crash between insert and commit replays
the batch; the store's reads deduplicate by record id, so nothing shows up twice. Bytes that
do not parse go to the dead-letter topic with the reason (counted), and the writer goes on.
A store or bus outage is retried with backoff; the uncommitted batch is kept and re-inserted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

from ledger.bus import Bus, Message
from ledger.reads import Store
from ledger.records import (
    TOPIC_DEAD_LETTERS,
    TOPIC_FEEDBACK,
    TOPIC_SCORES,
    TOPIC_TURNS,
    TOPIC_VERSIONS,
    DeadLetter,
    Record,
    RecordError,
    parse_record,
)

log = logging.getLogger(__name__)

STORED_TOPICS = (TOPIC_TURNS, TOPIC_FEEDBACK, TOPIC_SCORES, TOPIC_VERSIONS)
GROUP = "store-writer"


class WriterMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.written = Counter("rlgw_store_written", "Records inserted into the store", registry=registry)
        self.dead = Counter("rlgw_dead_letters", "Records sent to the dead-letter topic", registry=registry)
        self.failures = Counter(
            "rlgw_store_write_failures", "Failed store inserts (retried)", registry=registry
        )


class StoreWriter:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        topic_prefix: str = "",
        batch: int = 5000,
        linger_s: float = 1.0,
        group: str = GROUP,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._bus, self._store = bus, store
        self._prefix = topic_prefix
        self._batch, self._linger_s = batch, linger_s
        self._group = group
        self._consumer = bus.consumer([topic_prefix + t for t in STORED_TOPICS], group)
        self.metrics = WriterMetrics(registry)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dead_letters = 0

    # -- one step, for tests and for the loop ------------------------------------------------
    def step(self) -> int:
        """Gather one batch (size or time), insert it, commit. Returns records inserted."""
        messages = self._gather()
        if not messages:
            return 0
        records, bodies = self._parse(messages)
        if records:
            self._store.write(records, bodies)
        self._consumer.commit()
        self.written += len(records)
        self.metrics.written.inc(len(records))
        return len(records)

    def _gather(self) -> list[Message]:
        out: list[Message] = []
        deadline = time.monotonic() + self._linger_s
        while len(out) < self._batch and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            out.extend(self._consumer.poll(self._batch - len(out), timeout_s=min(left, 0.5)))
        return out

    def _parse(self, messages: Sequence[Message]) -> tuple[list[Record], list[bytes]]:
        records: list[Record] = []
        bodies: list[bytes] = []
        dead: list[tuple[str, bytes]] = []
        for m in messages:
            try:
                records.append(parse_record(m.value))
                bodies.append(m.value)
            except RecordError as exc:
                letter = DeadLetter(
                    topic=m.topic,
                    reason=f"{exc} (partition {m.partition}, offset {m.offset})",
                    payload=m.value.decode("utf-8", "replace"),
                )
                dead.append((m.key or letter.id, letter.to_bytes()))
        if dead:
            self._bus.publish(self._prefix + TOPIC_DEAD_LETTERS, dead)
            self.dead_letters += len(dead)
            self.metrics.dead.inc(len(dead))
            log.warning("store writer: %d unparseable records dead-lettered", len(dead))
        return records, bodies

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> StoreWriter:
        self._thread = threading.Thread(target=self.run, name="rlgw-store-writer", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self.step()
                backoff = 0.1
            except Exception as exc:  # bus or store down: keep the batch uncommitted, retry
                self.metrics.failures.inc()
                log.warning("store writer: %s; retrying in %.1f s", exc, backoff)
                self._rewind()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _rewind(self) -> None:
        """Forget uncommitted positions: re-read from the committed offsets next time."""
        try:
            self._consumer.close()
        except Exception:  # the consumer may be broken with the bus it talks to
            log.debug("store writer: closing the consumer failed", exc_info=True)
        self._consumer = self._bus.consumer([self._prefix + t for t in STORED_TOPICS], self._group)

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._consumer.close()
