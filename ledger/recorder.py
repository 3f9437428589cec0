"""The recorder: the gateway's one call into the ledger, which never delays a reply.

`record()` appends to a bounded in-memory queue and returns; a background thread serialises
and publishes batches to the bus. When the queue is full, or the bus is unavailable, records
go to the disk spool instead (never dropped) and are drained, in order, once the bus is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from ledger.bus import Bus, BusUnavailable
from ledger.records import Record

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, bus: Bus, *, capacity: int = 10000, topic_prefix: str = "", batch: int = 1000):
        self._bus = bus
        self._capacity = capacity
        self._prefix = topic_prefix
        self._batch = batch
        self._queue: deque[tuple[str, Record]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0

    def record(self, topic: str, record: Record) -> None:
        """Hand a record to the ledger. Never blocks on the bus."""
        self._queue.append((topic, record))
        self._wake.set()

    def start(self) -> Recorder:
        self._thread = threading.Thread(target=self._run, name="rlgw-recorder", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything recorded so far is published (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._queue and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.005)
        return not self._queue

    def _run(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            while self._queue:
                self._drain_once()
            if self._stop.is_set() and not self._queue:
                return

    def _drain_once(self) -> None:
        by_topic: dict[str, list[tuple[str, bytes]]] = {}
        taken: list[tuple[str, Record]] = []
        while self._queue and len(taken) < self._batch:
            topic, rec = self._queue[0]
            by_topic.setdefault(self._prefix + topic, []).append((rec.key, rec.to_bytes()))
            taken.append(self._queue.popleft())
        try:
            for topic, items in by_topic.items():
                self._bus.publish(topic, items)
            self.published += len(taken)
        except BusUnavailable:
            log.warning("bus unavailable; %d records wait in memory", len(taken))
            self._queue.extendleft(reversed(taken))
            time.sleep(0.5)
