import threading
from pathlib import Path

import pytest

from ledger.bus import BusUnavailable
from ledger.localbus import LocalBus, partition_for


def test_publish_poll_commit_and_resume_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    bus = LocalBus(path)
    bus.publish("t", [(f"k{i}", f"v{i}".encode()) for i in range(10)])
    c = bus.consumer(["t"], "g")
    got = c.poll(4, timeout_s=0)
    assert [m.value for m in got] == [b"v0", b"v1", b"v2", b"v3"]
    c.commit()
    assert len(c.poll(3, timeout_s=0)) == 3  # read but not committed
    bus.close()

    bus = LocalBus(path)
    again = bus.consumer(["t"], "g").poll(100, timeout_s=0)
    assert [m.value for m in again] == [f"v{i}".encode() for i in range(4, 10)]
    assert len(bus.consumer(["t"], "other").poll(100, timeout_s=0)) == 10  # groups are independent
    bus.close()


def test_partitions_keep_a_key_in_order(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "log.sqlite", partitions=4)
    items = [(f"ep{i % 7}", f"{i}".encode()) for i in range(200)]
    bus.publish("t", items)
    got = bus.consumer(["t"], "g").poll(1000, timeout_s=0)
    assert len(got) == 200
    assert {m.partition for m in got} == {partition_for(f"ep{i}", 4) for i in range(7)}
    for key in {k for k, _ in items}:
        mine = [int(m.value) for m in got if m.key == key]
        assert mine == sorted(mine)
    bus.close()


def test_poll_wakes_on_publish_from_another_thread(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "log.sqlite")
    c = bus.consumer(["t"], "g")
    t = threading.Timer(0.05, lambda: bus.publish("t", [("k", b"v")]))
    t.start()
    assert [m.value for m in c.poll(10, timeout_s=5)] == [b"v"]
    t.join()
    bus.close()


def test_concurrent_publishers_lose_nothing(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "log.sqlite", synchronous="normal")

    def pub(n: int) -> None:
        for i in range(50):
            bus.publish("t", [(f"k{n}", f"{n}:{i}".encode())])

    threads = [threading.Thread(target=pub, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(bus.end_offsets("t").values()) == 200
    bus.close()


def test_closed_bus_is_unavailable(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "log.sqlite")
    bus.close()
    with pytest.raises(BusUnavailable):
        bus.publish("t", [("k", b"v")])
