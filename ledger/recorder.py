"""The recorder: the gateway's one call into the ledger, which never delays a reply.

`record()` appends to a bounded in-memory queue and returns; a background thread serialises
and publishes batches to the bus. When the queue is full, or the bus is unavailable, records
go to the disk spool instead (never dropped) and are drained, in order, once the bus is back.

Order: while anything waits in the spool, new records go to the spool too ("spilling"): they
pass through an overflow list that a second thread (the spooler, the spool's only writer)
appends in batches, so `record()` never waits on a disk fsync. The publisher sends the queue
(older) before the spool (newer), so records reach the bus in the order they were recorded.
A process that starts with a non-empty spool (its predecessor's) drains it first. Without a
spool (unit tests) the queue simply grows past its capacity.

Wake-ups: `record()` wakes the publisher only when it sleeps, and the publisher lingers
`linger_s` after each publish so that the next batch gathers. A wake-up per record would cost a
thread switch and two GIL handoffs per request (measured: ~9 futex calls per request, about a
tenth of the gateway's CPU); a linger of a few ms makes it one per batch. A batch that spans topics and
fails half-way is spooled whole, so its first topics may see a record twice: readers dedupe
by record id.

A record the bus refuses for good (`BusRejected`: larger than Kafka's size limit, say) would
block the spool forever if retried: it is set aside in the spool's `rejected/` files, logged,
and announced by a dead letter (reason, size, where it is kept, its first bytes) on the
dead-letter topic; the records after it flow on.

A failing disk is an outage too (ledger/spooler.py). `ack`: "async" replies at once, "durable"
after the spool's group commit (`await durable()`, ledger/acks.py); see docs/faults.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from ledger.acks import DurableAcks
from ledger.bus import Bus, BusRejected, BusUnavailable
from ledger.records import TOPIC_DEAD_LETTERS, Encoded, Record
from ledger.rejected import dead_letters
from ledger.spool import Spool, SpoolItem
from ledger.spooler import Spooler, skip_published

log = logging.getLogger(__name__)

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.05, 2.0
DURABLE_DRAIN_S = 0.05  # durable acks: records wait on disk; fewer bus fsyncs beside the spool's (measured)


class Recorder:
    def __init__(
        self,
        bus: Bus,
        *,
        capacity: int = 10000,
        topic_prefix: str = "",
        batch: int = 1000,
        spool: Spool | None = None,
        on_published: Callable[[list[SpoolItem]], None] | None = None,
        linger_s: float = 0.0,
        ack: Literal["async", "durable"] = "async",
        max_memory_bytes: int = 256 * 1024 * 1024,
        ack_timeout_s: float = 10.0,
    ):
        if ack == "durable" and spool is None:
            raise ValueError("durable acknowledgements need a disk spool")
        self._bus = bus
        self._capacity = capacity
        self._prefix = topic_prefix
        self._batch = batch
        self._spool = spool
        self._on_published = on_published  # called with what the bus acknowledged
        self._linger_s = linger_s
        self._asleep = False  # the publisher waits for `_wake` (guarded by `_lock`)
        self._queue: deque[tuple[str, Record | Encoded]] = deque()
        self._lock = threading.Lock()  # guards the queue / spill decision
        self.durable_acks = ack == "durable"
        self.acks = DurableAcks()
        self._ack_timeout_s = ack_timeout_s
        self._max_memory_bytes = max_memory_bytes
        self._seq = 0  # records recorded so far (numbers them for durable acks)
        self._spooler = (
            None if spool is None else Spooler(spool, self._lock, batch, self._written, self._busy)
        )
        self._spilling = spool is not None and (spool.records > 0 or self.durable_acks)
        self._in_flight = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = BACKOFF_MIN_S
        self.published = 0
        self.rejected = 0  # records the bus refused for good (set aside, see _set_aside)

    def record(self, topic: str, record: Record | Encoded) -> None:
        """Hand a record to the ledger. Never blocks on the bus (a full queue spills to disk)."""
        with self._lock:
            self._seq += 1
            if not self._spilling and (self._spooler is None or len(self._queue) < self._capacity):
                self._queue.append((topic, record))
                if self._asleep:
                    self._asleep = False
                    self._wake.set()
                return
            assert self._spooler is not None  # spilling needs a spool
            if not self._spilling:  # the queue is older: it goes to disk first, in order
                self._spooler.put_front([(self._prefix + t, r.key, r.to_bytes()) for t, r in self._queue])
                self._queue.clear()
            self._spilling = True
            self._spooler.put(self._seq, (self._prefix + topic, record.key, record.to_bytes()))
        self._spooler.wake()

    async def durable(self) -> bool:
        """With durable acks: wait until what was recorded so far is on disk (False: the disk
        did not take it within `ack_timeout_s`). Async acks: True at once."""
        if not self.durable_acks:
            return True
        return await self.acks.wait(self._seq, self._ack_timeout_s)

    @property
    def accepting(self) -> bool:
        """False while records cannot be kept: memory is full while the disk refuses them, or
        (durable acks) the disk refuses writes at all (docs/faults.md)."""
        sp = self._spooler
        refusing = sp is not None and sp.outage_since is not None and self.durable_acks
        return sp is None or (sp.bytes < self._max_memory_bytes and not refusing)

    @property
    def disk(self) -> tuple[bool, int, int]:
        """(the disk refuses writes now, writes refused since start, bytes waiting in memory)."""
        return self._spooler.state if self._spooler is not None else (False, 0, 0)

    def start(self) -> Recorder:
        if self._spool is not None:
            skip_published(self._spool, self._bus, self._batch)
        self._thread = threading.Thread(target=self._run, name="rlgw-recorder", daemon=True)
        self._thread.start()
        if self._spooler is not None:
            self._spooler.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Publish what is queued; what the bus cannot take in time goes to the spool."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("rlgw-recorder did not stop within %.1f s", timeout_s)
        if self._spooler is not None:
            self._spooler.stop(timeout_s)
        self._spill_queue(timeout_s)
        if self._spool is not None:
            self._spool.close()

    @property
    def spilled(self) -> int:  # records written to the spool since start
        return self._spooler.written if self._spooler is not None else 0

    @property
    def pending(self) -> int:
        """Records not yet on the bus: queued, being published, or spooled."""
        spooled = self._spool.records if self._spool is not None else 0
        waiting = self._spooler.waiting if self._spooler is not None else 0
        return len(self._queue) + self._in_flight + waiting + spooled

    def _busy(self) -> bool:  # (under the lock) a batch from the queue is being published
        return self._in_flight > 0

    def _written(self, seq: int) -> None:  # the spooler's thread: records up to `seq` are on disk
        self.acks.advance(seq)
        self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything recorded so far is published (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.005)
        return not self.pending

    # -- the publishing thread -------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._queue:
                    self._publish_queue()
                    if self._linger_s and len(self._queue) < self._batch and not self._stop.is_set():
                        time.sleep(self._linger_s)  # let the next batch gather
                elif self._spool is not None and self._spool.records:
                    self._publish_spool()
                    if self._linger_s and self._spool.records < self._batch and not self._stop.is_set():
                        time.sleep(DURABLE_DRAIN_S if self.durable_acks else self._linger_s)
                else:
                    with self._lock:
                        sp = self._spooler
                        if (
                            sp is not None
                            and not sp.spool.records
                            and not sp.waiting
                            and not self.durable_acks
                        ):
                            self._spilling = False
                        asleep = self._asleep = not self._queue
                    if asleep:
                        self._wake.wait(0.5)
                        self._wake.clear()
            except BusUnavailable as exc:
                log.warning("ledger bus unavailable (%s); retrying in %.2f s", exc, self._backoff)
                self._stop.wait(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
            except Exception:
                log.exception("recorder: unexpected error; records stay queued or spooled")
                self._stop.wait(1.0)
        # stopping: one last try to publish the queue; the rest is spooled by close()
        try:
            while self._queue:
                self._publish_queue()
        except BusUnavailable:
            pass

    def _publish_queue(self) -> None:
        with self._lock:
            taken = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            self._in_flight = len(taken)
        items = [(self._prefix + topic, rec.key, rec.to_bytes()) for topic, rec in taken]
        try:
            self._publish(items)
        except Exception:  # the bus is down (or failed oddly): nothing taken may be dropped
            with self._lock:  # keep order: this batch, the rest of the queue, then newer overflow
                if self._spooler is None:
                    self._queue.extendleft(reversed(taken))
                else:
                    rest = [(self._prefix + t, r.key, r.to_bytes()) for t, r in self._queue]
                    self._queue.clear()
                    self._spooler.put_front(items + rest)
                    self._spilling = True
                self._in_flight = 0
            if self._spooler is not None:
                self._spooler.wake()
            raise
        self._in_flight = 0
        if self._spooler is not None and self._spooler.overflow:
            self._spooler.wake()  # it waited for this batch (older than the overflow) to land

    def _publish_spool(self) -> None:
        assert self._spool is not None
        items, cursor = self._spool.read(self._batch)
        if items:
            self._publish(items)
        self._spool.commit(cursor)

    def _publish(self, items: list[SpoolItem]) -> None:
        by_topic: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_topic.setdefault(item[0], []).append(i)
        refused: dict[str, dict[int, str]] = {}  # topic -> {index in items: why}
        for topic, indices in by_topic.items():
            try:
                self._bus.publish(topic, [(items[i][1], items[i][2]) for i in indices])
            except BusRejected as exc:
                refused[topic] = {indices[j]: why for j, why in exc.rejected.items()}
        if refused:  # set aside only once every topic took the rest (an outage spools them all)
            for topic, whys in refused.items():
                self._set_aside(topic, [(items[i], why) for i, why in sorted(whys.items())])
            dropped = {i for whys in refused.values() for i in whys}
            items = [item for i, item in enumerate(items) if i not in dropped]
        self.published += len(items)
        self._backoff = BACKOFF_MIN_S
        if self._on_published is not None:
            self._on_published(items)

    def _set_aside(self, topic: str, rejected: list[tuple[SpoolItem, str]]) -> None:
        """Records of `topic` the bus will never take: kept on disk, each announced by a dead letter."""
        self.rejected += len(rejected)
        values = [value for (_t, _k, value), _why in rejected]
        kept = str(self._spool.keep_rejected(topic, values)) if self._spool is not None else ""
        for letter in dead_letters(topic, rejected, kept):
            self.record(TOPIC_DEAD_LETTERS, letter)

    def _spill_queue(self, timeout_s: float) -> None:
        """On close: the queue (older) then the overflow (newer) go to disk, in that order."""
        with self._lock:
            items = [(self._prefix + t, r.key, r.to_bytes()) for t, r in self._queue]
            self._queue.clear()
        if self._spooler is not None:
            self._spooler.put_front(items)
            self._spooler.write_until(time.monotonic() + timeout_s)
        elif items:
            log.error("recorder closed with %d records unpublished and no spool", len(items))
