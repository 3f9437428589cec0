"""Durable acknowledgements (`ledger.ack = "durable"`): a reply waits until its records are on disk.

Every record gets a sequence number as it is recorded. The spooler appends records in order, a
batch per fsync, and after each batch calls `advance(seq)`: every record numbered up to `seq`
is durable. A request handler calls `await wait(seq)` with the number of its last record; the
waiters of one event loop are released by one callback per batch (not one per record), so a
window of concurrent requests shares one fsync and one cross-thread wake-up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading


class DurableAcks:
    def __init__(self) -> None:
        self.done_seq = 0  # every record numbered up to this is on disk
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap by sequence number
        self._ids = itertools.count()  # ties: futures do not compare
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False  # a release callback is scheduled on the loop
        self._lock = threading.Lock()

    def advance(self, seq: int) -> None:
        """The spooler's thread: records up to `seq` are on disk."""
        self.done_seq = seq
        with self._lock:
            loop, schedule = self._loop, not self._pending and bool(self._waiters)
            if schedule:
                self._pending = True
        if schedule and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._release)

    async def wait(self, seq: int, timeout_s: float) -> bool:
        """Until records up to `seq` are on disk (True), or `timeout_s` passed (False)."""
        if self.done_seq >= seq:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._loop = loop  # one serving loop per process
            heapq.heappush(self._waiters, (seq, next(self._ids), fut))
        if self.done_seq >= seq:  # written while we registered: the callback may have run already
            self._release()
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return False
        return True

    def _release(self) -> None:
        """On the loop: wake every waiter whose records are on disk."""
        done = self.done_seq
        with self._lock:
            self._pending = False
            ready = []
            while self._waiters and self._waiters[0][0] <= done:
                ready.append(heapq.heappop(self._waiters)[2])
        for fut in ready:
            if not fut.done():
                fut.set_result(None)
