"""The embedded default bus: a durable log in one SQLite file (WAL mode) in the data dir.

Same protocol as `MemoryBus` and `KafkaBus`: append (key, value) records to topics, read them
as consumer groups whose committed offsets live in the same file, so an in-process rubric
worker, store writer or learner resumes where it stopped after a restart. A topic may have
several partitions (records go to `crc32(key) % partitions`, so one key stays ordered).

`publish` returns once the transaction is committed (with `synchronous=FULL`, fsynced).
One connection guarded by a lock serves every thread of the process; another process may
open the same file (SQLite locks it), and consumers poll the file, so they see its appends.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ledger.bus import BusUnavailable, Message

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    topic TEXT NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL,
    key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (topic, part, off)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
    grp TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, part)
) WITHOUT ROWID;
"""


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for a key (the same in every process and run)."""
    return zlib.crc32(key.encode()) % partitions if partitions > 1 else 0


class LocalBus:
    def __init__(
        self,
        path: Path,
        *,
        partitions: int = 1,
        synchronous: Literal["full", "normal"] = "full",
        poll_interval_s: float = 0.05,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.partitions = max(1, partitions)
        self._poll_interval_s = poll_interval_s
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._appended = threading.Condition()  # wakes in-process consumers on publish
        self._closed = False

    def publish(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        by_part: dict[int, list[tuple[str, bytes]]] = {}
        for key, value in items:
            by_part.setdefault(partition_for(key, self.partitions), []).append((key, value))
        with self._lock:
            if self._closed:
                raise BusUnavailable("local bus is closed")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for part, rows in by_part.items():
                    (last,) = self._db.execute(
                        "SELECT max(off) FROM log WHERE topic = ? AND part = ?", (topic, part)
                    ).fetchone()
                    start = -1 if last is None else last
                    self._db.executemany(
                        "INSERT INTO log (topic, part, off, key, value) VALUES (?, ?, ?, ?, ?)",
                        [(topic, part, start + 1 + i, k, v) for i, (k, v) in enumerate(rows)],
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise BusUnavailable(f"local log write failed: {exc}") from exc
        with self._appended:
            self._appended.notify_all()

    def _rollback(self) -> None:
        """After a failed write (a full or failing disk): a rollback may fail the same way, and
        SQLite then rolls back by itself; either way the log holds none of the batch."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def tail_values(self, topic: str, limit: int) -> set[bytes]:
        """The last `limit` values of each partition of `topic` (what a crash may have left
        published but not yet marked drained in the spool)."""
        with self._lock:
            if self._closed:
                raise BusUnavailable("local bus is closed")
            out: set[bytes] = set()
            for part in range(self.partitions):
                rows = self._db.execute(
                    "SELECT value FROM log WHERE topic = ? AND part = ? ORDER BY off DESC LIMIT ?",
                    (topic, part, limit),
                ).fetchall()
                out.update(bytes(v) for (v,) in rows)
            return out

    def consumer(self, topics: Sequence[str], group: str) -> LocalConsumer:
        return LocalConsumer(self, list(topics), group)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Next offset per partition of a topic (its length, per partition)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT part, max(off) + 1 FROM log WHERE topic = ? GROUP BY part", (topic,)
            ).fetchall()
        return {int(p): int(n) for p, n in rows}

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
        with self._appended:
            self._appended.notify_all()

    # used by LocalConsumer, under the lock
    def _read(self, topic: str, part: int, start: int, limit: int) -> list[Message]:
        rows = self._db.execute(
            "SELECT off, key, value FROM log WHERE topic = ? AND part = ? AND off >= ? ORDER BY off LIMIT ?",
            (topic, part, start, limit),
        ).fetchall()
        return [Message(topic, part, off, key, bytes(value)) for off, key, value in rows]

    def _committed(self, group: str, topic: str) -> dict[int, int]:
        rows = self._db.execute(
            "SELECT part, next FROM offsets WHERE grp = ? AND topic = ?", (group, topic)
        ).fetchall()
        return {int(p): int(n) for p, n in rows}


class LocalConsumer:
    """One member of a consumer group; `commit` stores the positions handed out by `poll`."""

    def __init__(self, bus: LocalBus, topics: list[str], group: str) -> None:
        self._bus, self._topics, self._group = bus, topics, group
        self._positions: dict[tuple[str, int], int] = {}
        with bus._lock:
            for topic in topics:
                committed = bus._committed(group, topic)
                for part in range(bus.partitions):
                    self._positions[(topic, part)] = committed.get(part, 0)
        self._dirty: set[tuple[str, int]] = set()

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while True:
            out = self._take(max_records)
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            with self._bus._appended:  # woken by in-process appends; polls for other processes
                self._bus._appended.wait(min(left, self._bus._poll_interval_s))

    def _take(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        bus = self._bus
        with bus._lock:
            if bus._closed:
                raise BusUnavailable("local bus is closed")
            for (topic, part), start in self._positions.items():
                if len(out) >= max_records:
                    break
                batch = bus._read(topic, part, start, max_records - len(out))
                if batch:
                    self._positions[(topic, part)] = batch[-1].offset + 1
                    self._dirty.add((topic, part))
                    out.extend(batch)
        return out

    def commit(self) -> None:
        if not self._dirty:
            return
        rows = [(self._group, t, p, self._positions[(t, p)]) for t, p in self._dirty]
        bus = self._bus
        with bus._lock:
            if bus._closed:
                raise BusUnavailable("local bus is closed")
            try:
                bus._db.execute("BEGIN IMMEDIATE")
                bus._db.executemany(
                    "INSERT INTO offsets (grp, topic, part, next) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (grp, topic, part) DO UPDATE SET next = excluded.next",
                    rows,
                )
                bus._db.execute("COMMIT")
            except sqlite3.Error as exc:  # a full or failing disk: committed again next time
                bus._rollback()
                raise BusUnavailable(f"local log offset commit failed: {exc}") from exc
        self._dirty.clear()

    def close(self) -> None:
        self._positions.clear()
        self._dirty.clear()
