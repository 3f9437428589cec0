"""The recorder when the disk fails (issue #13, items 2 and 3): a spool the disk refuses is an
outage, never a dead thread; durable acks wait for the spool's group commit.

`RefusingDisk` is the spool with a disk that refuses the next `refuse` writes with a chosen
errno (the real ENOSPC / EROFS cases run against a tmpfs in tests/integration/test_drill_disk.py).
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ledger.bus import MemoryBus
from ledger.recorder import Recorder
from ledger.records import TOPIC_TURNS, Turn, parse_record
from ledger.spool import Spool


class RefusingDisk(Spool):
    def __init__(self, directory: Path, **kw: Any) -> None:
        super().__init__(directory, **kw)
        self.refuse, self.errno, self.tried = 0, errno.EIO, 0

    def _write(self, data: bytes) -> None:
        self.tried += 1
        if self.refuse > 0:
            self.refuse -= 1
            half = memoryview(data)[: len(data) // 2]
            if half:
                self._fh.write(half)  # a torn write: part of the batch reached the file
            raise OSError(self.errno, os.strerror(self.errno))
        super()._write(data)


def turn(i: int) -> Turn:
    return Turn(episode_id=f"ep{i % 3}", model="m", version="v1", metadata={"i": i})


def order(bus: MemoryBus) -> list[int]:
    return [parse_record(m.value).metadata["i"] for m in bus.messages("turns")]  # type: ignore[attr-defined]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS])
def test_a_refused_spool_write_is_an_outage_and_nothing_is_lost(tmp_path: Path, code: int) -> None:
    bus = MemoryBus()
    bus.available = False  # the bus is down: every record goes to the spool
    disk = RefusingDisk(tmp_path, fsync="batch")
    disk.refuse, disk.errno = 3, code
    rec = Recorder(bus, spool=disk, capacity=10, batch=50).start()
    for i in range(200):
        rec.record(TOPIC_TURNS, turn(i))
    deadline = time.monotonic() + 10
    while rec.disk[1] < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert rec.disk[1] == 3  # each refused write counted (the gateway's metrics read these)
    assert rec._spooler is not None and rec._spooler._thread is not None and rec._spooler._thread.is_alive()
    bus.available = True
    assert rec.flush(20)
    assert order(bus) == list(range(200))  # each once, in order: torn writes were cut off
    assert rec.disk == (False, 3, 0)
    rec.close()


def test_memory_is_bounded_while_the_disk_refuses(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.available = False
    disk = RefusingDisk(tmp_path)
    disk.refuse = 10**9
    rec = Recorder(bus, spool=disk, capacity=1, max_memory_bytes=20_000).start()
    for i in range(400):
        rec.record(TOPIC_TURNS, turn(i))
    assert not rec.accepting  # the gateway answers 503 instead of acknowledging more
    disk.refuse = 0
    bus.available = True
    assert rec.flush(20) and rec.accepting
    assert order(bus) == list(range(400))
    rec.close()


def test_close_waits_for_the_disk_and_a_restart_drains(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.available = False
    disk = RefusingDisk(tmp_path)
    disk.refuse = 3
    rec = Recorder(bus, spool=disk, capacity=1).start()
    for i in range(50):
        rec.record(TOPIC_TURNS, turn(i))
    rec.close(timeout_s=10)  # retries until the disk takes them
    again = Recorder(bus, spool=Spool(tmp_path))
    bus.available = True
    again.start()
    assert again.flush(10)
    assert order(bus) == list(range(50))
    again.close()


def test_durable_acks_wait_for_the_group_commit(tmp_path: Path) -> None:
    bus = MemoryBus()
    disk = RefusingDisk(tmp_path, fsync="batch")
    rec = Recorder(bus, spool=disk, ack="durable", ack_timeout_s=5).start()

    async def requests() -> list[bool]:
        async def one(i: int) -> bool:
            rec.record(TOPIC_TURNS, turn(i))
            ok = await rec.durable()
            assert rec.acks.done_seq >= i + 1 or not ok
            return ok

        return await asyncio.gather(*(one(i) for i in range(64)))

    assert asyncio.run(requests()) == [True] * 64
    assert disk.tried < 64  # one write (and fsync) carried many requests' records
    assert rec.flush(10) and order(bus) == list(range(64))
    disk.refuse = 10**9

    async def refused() -> bool:
        rec.record(TOPIC_TURNS, turn(64))
        return await rec.durable()

    rec._ack_timeout_s = 0.3
    assert asyncio.run(refused()) is False  # the reply is a 503: never acknowledged, never lost
    assert not rec.accepting  # durable acks refuse new requests while the disk refuses writes
    disk.refuse = 0
    assert rec.flush(10) and order(bus) == list(range(65))
    rec.close()


@pytest.mark.parametrize("ledger", [{"bus": "memory"}, {"bus": "local", "spool_fsync": "never"}])
def test_durable_acks_need_a_spool_that_fsyncs(ledger: dict[str, str]) -> None:
    from pydantic import ValidationError

    from ledger.config import LedgerConfig

    with pytest.raises(ValidationError, match="durable"):
        LedgerConfig.model_validate({**ledger, "ack": "durable"})
    assert LedgerConfig.model_validate({"bus": "local", "ack": "durable"}).ack == "durable"


def test_a_restart_does_not_resend_what_a_crash_left_published_but_not_marked(tmp_path: Path) -> None:
    """The crash window: the embedded log took a batch, the spool's drain mark was not moved."""
    from ledger.localbus import LocalBus
    from ledger.spooler import skip_published

    bus = LocalBus(tmp_path / "log.sqlite")
    spool = Spool(tmp_path / "spool")
    items = [("turns", f"ep{i}", turn(i).to_bytes()) for i in range(6)]
    spool.append(items)
    bus.publish("turns", [(k, v) for _t, k, v in items[:4]])  # published, then the crash
    assert skip_published(spool, bus, batch=100) == 4
    left, _ = spool.read(100)
    assert left == items[4:]  # only what the bus lacks is sent again
    assert skip_published(spool, bus, batch=100) == 0
    spool.close()
    bus.close()


class SlowOutageBus(MemoryBus):
    """A bus that takes a while to fail while it is down (a Kafka publish timing out)."""

    def publish(self, topic: str, items: Any) -> None:
        if not self.available:
            time.sleep(0.2)
        super().publish(topic, items)


@pytest.mark.parametrize("started", [True, False])
def test_older_records_reach_the_spool_ahead_of_newer_ones(tmp_path: Path, started: bool) -> None:
    """The bus is down and slow to say so: the batch being published and the queue are older
    than what spilled past them, and must reach the spool (and the bus) first."""
    bus = SlowOutageBus()
    bus.available = False
    rec = Recorder(bus, capacity=50, batch=20, spool=Spool(tmp_path))
    if started:
        rec.start()
    for i in range(300):
        rec.record(TOPIC_TURNS, turn(i))
        if i == 0:
            time.sleep(0.05)  # the publisher has taken record 0 and waits on the bus
    if not started:
        rec.start()
    time.sleep(0.6)  # the spooler writes, the publisher fails on the bus
    bus.available = True
    assert rec.flush(20)
    assert order(bus) == list(range(300))
    rec.close()
