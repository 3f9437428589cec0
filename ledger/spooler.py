"""The spooler: the disk spool's only writer, a thread beside the recorder's publisher.

Records bound for the spool wait in `overflow` (in memory, in order) until this thread appends
them, a batch at a time: one write and one fsync for everything that gathered while the last
batch was being written (a group commit). `written_seq` then says that every record numbered
up to it is on disk; `DurableAcks` (ledger/acks.py) releases the callers waiting for that.

The disk may refuse a write: full (ENOSPC), failing (EIO) or read-only (EROFS). That is an
outage like a broker's, never a dead thread: the batch goes back to the front of the overflow,
a warning is logged once per outage, `outage_since` is set (the gateway's metrics read it), and
the write is retried with a backoff until the disk takes it. Meanwhile the records stay in
memory; `bytes` says how much, so that the gateway stops taking new requests at its limit
rather than grow without bound (docs/faults.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ledger.bus import BusUnavailable
from ledger.spool import Spool, SpoolItem

log = logging.getLogger(__name__)

RETRY_MIN_S, RETRY_MAX_S = 0.05, 1.0


class Spooler:
    def __init__(
        self,
        spool: Spool,
        lock: threading.Lock,
        batch: int,
        on_written: Callable[[int], None],
        publishing: Callable[[], bool],
    ) -> None:
        self.spool = spool
        self._lock = lock  # the recorder's: guards `overflow`, `bytes` and `holding`
        self._publishing = publishing  # the publisher holds a batch from its queue (older)
        self._batch = batch
        self._on_written = on_written  # called with `written_seq` after each batch is on disk
        self.overflow: deque[tuple[int, SpoolItem]] = deque()  # (sequence number, item); 0: no waiter
        self.bytes = 0  # value bytes in `overflow` and in the batch being written
        self.holding = 0  # records taken from `overflow`, being written
        self.written_seq = 0
        self.written = 0  # records appended since start
        self.outage_since: float | None = None  # monotonic time the disk first refused a write
        self.errors = 0  # writes the disk refused, since start
        self._retry_s = RETRY_MIN_S
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- called by the recorder (under its lock) ----------------------------------------------
    def put(self, seq: int, item: SpoolItem) -> None:
        self.overflow.append((seq, item))
        self.bytes += len(item[2])

    def put_front(self, items: list[SpoolItem]) -> None:
        """Older records than any in the overflow (a batch the bus did not take)."""
        self.overflow.extendleft((0, item) for item in reversed(items))
        self.bytes += sum(len(item[2]) for item in items)

    @property
    def state(self) -> tuple[bool, int, int]:
        """(the disk refuses writes now, writes refused since start, bytes waiting in memory)."""
        return self.outage_since is not None, self.errors, self.bytes

    @property
    def waiting(self) -> int:
        return len(self.overflow) + self.holding

    # -- the thread ---------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def start(self) -> Spooler:
        self._thread = threading.Thread(target=self._run, name="rlgw-spooler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("rlgw-spooler did not stop within %.1f s", timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.outage_since is None:  # in an outage the retry backoff paces the writes
                self._wake.wait(0.5)
                self._wake.clear()
            try:
                if not self.write():
                    self._stop.wait(self._retry_s)
                    self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            except Exception:  # the thread must outlive anything a write can raise
                log.exception("spooler: unexpected error; records stay in memory and are retried")
                self._stop.wait(RETRY_MAX_S)

    def write(self, force: bool = False) -> bool:
        """Append everything in the overflow; False when the disk refused (records kept). Waits
        (returns True, writing nothing) while the publisher holds a batch from its queue: that
        batch is older, and goes in front of the overflow if the bus refuses it."""
        while self.overflow:
            with self._lock:
                if not force and self._publishing():
                    return True
                n = min(self._batch, len(self.overflow))
                taken = [self.overflow.popleft() for _ in range(n)]
                self.holding = n
            try:
                self.spool.append([item for _seq, item in taken])
            except OSError as exc:
                with self._lock:
                    self.overflow.extendleft(reversed(taken))
                    self.holding = 0
                self._refused(exc)
                return False
            with self._lock:
                self.holding = 0
                self.written += n
                self.bytes -= sum(len(item[2]) for _seq, item in taken)
                seq = max(s for s, _item in taken)
            self._recovered()
            if seq > self.written_seq:
                self.written_seq = seq
            self._on_written(self.written_seq)
        return True

    def write_until(self, deadline: float) -> bool:
        """On close: keep trying until the disk takes everything or time runs out."""
        while not self.write(force=True):
            if time.monotonic() >= deadline:
                log.error("closing with %d records the disk would not take in time: lost", self.waiting)
                return False
            time.sleep(self._retry_s)
            self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
        return True

    def _refused(self, exc: OSError) -> None:
        self.errors += 1
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.warning(
                "ledger spool: the disk refused a write (%s); %d records (%d bytes) wait in memory "
                "and are retried until it takes them",
                exc,
                self.waiting,
                self.bytes,
            )

    def _recovered(self) -> None:
        self._retry_s = RETRY_MIN_S
        if self.outage_since is not None:
            log.warning(
                "ledger spool: the disk takes writes again after %.1f s (%d refused writes)",
                time.monotonic() - self.outage_since,
                self.errors,
            )
            self.outage_since = None


def skip_published(spool: Spool, bus: Any, batch: int) -> int:
    """On start: drop the spool's oldest records that the bus already holds, byte for byte (a
    crash between a publish and its drain mark replays them). Only a bus that can show its
    tail (the embedded log: `tail_values`) is asked; elsewhere readers dedupe by record id."""
    tail_values = getattr(bus, "tail_values", None)
    if tail_values is None or not spool.records:
        return 0
    items, _ = spool.read(batch)
    tails: dict[str, set[bytes]] = {}
    held = 0
    try:
        for topic, _key, value in items:
            if topic not in tails:
                tails[topic] = tail_values(topic, batch)
            if value not in tails[topic]:
                break
            held += 1
    except BusUnavailable:
        return 0  # drained as usual once the bus is back (readers dedupe by id)
    if held:
        _, cursor = spool.read(held)
        spool.commit(cursor)
        log.info("spool: %d records were already on the bus before the restart; not sent again", held)
    return held
