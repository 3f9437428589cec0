"""Drill: the gateway's data dir on a 2 MB tmpfs that fills up (ENOSPC) under live traffic, then
recovers. (A read-only disk cannot be made here at runtime: Linux refuses a read-only remount
while files are open for writing; EROFS and EIO run against the spool in
tests/unit/test_ledger_disk_faults.py.) Real processes: `rlgw gateway` on the embedded log
(its SQLite file and the spool both on that disk), a fake replica process, the openai SDK.

Every reply the client got must be recorded exactly once after the disk recovers, the process
must keep serving (async acks) or refuse with 503 while it cannot keep records (durable acks),
and SIGTERM must then close the ledger with exit status 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.disk import fill, local_records, tmpfs
from tests.fixtures.drills import Traffic, count_once, fake_replica, gateway, metric, stopping, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE_PER_S = 10.0  # the figure


def full_disk(disk: Path) -> Callable[[], None]:
    ballast = fill(disk)
    return ballast.unlink


@pytest.mark.parametrize(
    ("fault", "ack"),
    [(full_disk, "async"), (full_disk, "durable")],
    ids=["enospc-async", "enospc-durable"],
)
def test_a_disk_that_refuses_writes_loses_no_acknowledged_turn(
    tmp_path: Path, fault: Callable[[Path], Callable[[], None]], ack: str
) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk, stopping([]) as procs:
        replica, url = fake_replica(tmp_path)
        procs.append(replica)
        env = {"RLGW_LEDGER__BUS": "local", "RLGW_LEDGER__STORE": "memory", "RLGW_LEDGER__ACK": ack}
        gw = gateway(disk, [url], env)
        procs.append(gw)
        traffic = Traffic(gw.root + "/v1", RATE_PER_S).start()
        time.sleep(2)
        restore = fault(disk)
        wait_for(lambda: metric(gw.root, "rlgw_ledger_disk_outage") == 1, "the disk outage to show", 20)
        time.sleep(3)
        waiting = metric(gw.root, "rlgw_record_queue")
        restore()
        drained_s = wait_for(lambda: metric(gw.root, "rlgw_record_queue") == 0, "the records to drain", 60)
        time.sleep(2)
        traffic.stop()
        gw.proc.stop(30)
        assert gw.proc.popen is not None
        code = gw.proc.popen.returncode
        turns = local_records(disk)
        figures = count_once(traffic.turn_ids, [t.id for t in turns])
        print(
            f"\n[drill disk {fault.__name__} ack={ack}] sent {traffic.sent}, acknowledged "
            f"{len(traffic.turn_ids)}, refused {len(traffic.failed)}, waiting during the outage "
            f"{waiting}, drained {drained_s:.1f} s after the disk came back; turn records {figures}; "
            f"exit status {code}"
        )
        assert code == 0, gw.proc.log_tail()
        assert not (disk / "ledger" / "log.sqlite-wal").exists()  # closed cleanly
        assert figures["missing"] == figures["duplicated"] == 0
        assert waiting is not None and waiting > 0  # the outage was real: records had to wait
        if ack == "async":
            assert traffic.failed == []  # served throughout, records kept in memory meanwhile
        else:
            assert all("503" in why or "ledger" in why for _t, why in traffic.failed), traffic.failed[:3]
        assert "Traceback" not in gw.proc.log_tail(200_000)
