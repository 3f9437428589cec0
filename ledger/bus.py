"""The bus seam: append records to topics, consume them as a group, commit after the work.

Three implementations share this protocol: `KafkaBus` (kafka-python, production),
`LocalBus` (a durable SQLite log in the data dir, the embedded default) and `MemoryBus`
(below, for unit tests). Delivery is at-least-once: a consumer commits only after its work is
durable, so consumers must be idempotent (records carry ids for that).

Errors:
    BusError
     ├── BusUnavailable   transient: the broker is down or slow; retry later (spool meanwhile)
     └── BusRejected      permanent, for some records of a batch (too large, invalid): the
                          others were published; retrying the rejected ones cannot help
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class BusError(Exception):
    pass


class BusUnavailable(BusError):
    """The bus cannot take or give records right now; the caller retries later."""


class BusRejected(BusError):
    """The bus took a batch except the records in `rejected` (index in the batch -> reason),
    which it will never take: the caller keeps them elsewhere instead of retrying forever."""

    def __init__(self, rejected: dict[int, str]) -> None:
        super().__init__(f"{len(rejected)} record(s) rejected: {next(iter(rejected.values()), '')}")
        self.rejected = rejected


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


class Consumer(Protocol):
    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        """Up to `max_records` messages after this group's committed position."""
        ...

    def commit(self) -> None:
        """Mark everything returned by poll so far as done for this group."""
        ...

    def close(self) -> None: ...


class Bus(Protocol):
    def publish(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Append (key, value) pairs; returns once they are durable.

        Raises BusUnavailable (retry the batch later) or BusRejected (the rest is durable)."""
        ...

    def consumer(self, topics: Sequence[str], group: str) -> Consumer: ...

    def close(self) -> None: ...


class MemoryBus:
    """An in-process bus for unit tests: one partition per topic, groups with offsets.
    `max_record_bytes` rejects larger values the way a Kafka broker's size limit does."""

    def __init__(self, max_record_bytes: int | None = None) -> None:
        self.max_record_bytes = max_record_bytes
        self._logs: dict[str, list[Message]] = defaultdict(list)
        self._offsets: dict[tuple[str, str], int] = defaultdict(int)  # (group, topic) -> next
        self._lock = threading.Condition()
        self.available = True  # tests flip this to simulate an outage

    def publish(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        if not self.available:
            raise BusUnavailable("memory bus marked unavailable")
        limit = self.max_record_bytes
        rejected = {
            i: f"{len(v)} bytes is over the limit of {limit}"
            for i, (_k, v) in enumerate(items)
            if limit is not None and len(v) > limit
        }
        with self._lock:
            log = self._logs[topic]
            for i, (key, value) in enumerate(items):
                if i not in rejected:
                    log.append(Message(topic, 0, len(log), key, value))
            self._lock.notify_all()
        if rejected:
            raise BusRejected(rejected)

    def consumer(self, topics: Sequence[str], group: str) -> MemoryConsumer:
        return MemoryConsumer(self, list(topics), group)

    def messages(self, topic: str) -> list[Message]:
        with self._lock:
            return list(self._logs[topic])

    def close(self) -> None:
        pass


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, topics: list[str], group: str) -> None:
        self._bus, self._topics, self._group = bus, topics, group
        self._pending: dict[str, int] = {}

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        bus = self._bus
        with bus._lock:
            out = self._take(max_records)
            if not out and timeout_s > 0:
                bus._lock.wait(timeout_s)
                out = self._take(max_records)
        return out

    def _take(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        for topic in self._topics:
            start = self._pending.get(topic, self._bus._offsets[(self._group, topic)])
            batch = self._bus._logs[topic][start : start + max_records - len(out)]
            out.extend(batch)
            self._pending[topic] = start + len(batch)
        return out

    def commit(self) -> None:
        with self._bus._lock:
            for topic, nxt in self._pending.items():
                self._bus._offsets[(self._group, topic)] = nxt

    def close(self) -> None:
        self._pending.clear()
