from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ledger.spool import Spool, SpoolBusy


def items(n: int, start: int = 0) -> list[tuple[str, str, bytes]]:
    return [("t", f"k{i}", f"value-{i}".encode()) for i in range(start, start + n)]


def test_append_read_commit_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync="never")
    spool.append(items(5))
    spool.append(items(5, 5))
    assert spool.records == 10
    got, cur = spool.read(4)
    assert got == items(4)
    spool.commit(cur)
    got, cur = spool.read(100)
    assert got == items(6, 4)
    spool.commit(cur)
    assert spool.records == 0 and spool.size_bytes == 0
    spool.close()


def test_restart_drains_what_the_predecessor_left(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync="always")
    spool.append(items(10))
    _, cur = spool.read(3)
    spool.commit(cur)
    spool.close()
    again = Spool(tmp_path)
    assert again.records == 7
    got, _ = again.read(100)
    assert got == items(7, 3)
    again.close()


def test_segments_roll_and_are_deleted_when_drained(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200, fsync="batch")
    for i in range(20):
        spool.append(items(1, i))
    assert len(list(tmp_path.glob("*.seg"))) >= 2
    got, cur = spool.read(1000)
    assert got == items(20)
    spool.commit(cur)
    assert spool.records == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the fresh current segment
    spool.close()


def test_torn_tail_is_cut_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(items(3))
    spool.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    with open(seg, "ab") as fh:
        fh.write(b"\x50\x00\x00\x00garbage")  # a crash in the middle of a frame
    again = Spool(tmp_path)
    assert again.records == 3
    again.append(items(1, 3))
    got, _ = again.read(100)
    assert got == items(4)
    again.close()


def test_alarm_gauge_and_one_owner(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    spool = Spool(tmp_path, alarm_bytes=100, registry=registry)
    assert registry.get_sample_value("rlgw_spool_alarm") == 0
    spool.append(items(10))
    assert registry.get_sample_value("rlgw_spool_alarm") == 1
    assert registry.get_sample_value("rlgw_spool_records") == 10
    assert "past the alarm" in caplog.text
    with pytest.raises(SpoolBusy):
        Spool(tmp_path)
    _, cur = spool.read(100)
    spool.commit(cur)
    assert registry.get_sample_value("rlgw_spool_alarm") == 0
    spool.close()
