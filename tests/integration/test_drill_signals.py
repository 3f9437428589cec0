"""Drill: SIGTERM (how Kubernetes stops a pod) under live traffic. Each `rlgw` process must
drain, close its ledger and exit with status 0: for the gateway, every turn it acknowledged is
in its embedded log afterwards and the SQLite WAL is gone (the log was closed, not abandoned).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.fixtures.disk import local_records
from tests.fixtures.drills import Proc, Traffic, count_once, fake_replica, gateway, stopping, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOCAL = {"RLGW_LEDGER__BUS": "local", "RLGW_LEDGER__STORE": "memory"}


def test_sigterm_mid_traffic_closes_the_gateways_ledger_and_exits_0(tmp_path: Path) -> None:
    with stopping([]) as procs:
        replica, url = fake_replica(tmp_path)
        procs.append(replica)
        data = tmp_path / "gw"
        gw = gateway(data, [url], LOCAL)
        procs.append(gw)
        traffic = Traffic(gw.root + "/v1", 20.0).start()
        wait_for(lambda: len(traffic.turn_ids) >= 20, "traffic to flow", 60)
        gw.proc.stop(30)  # SIGTERM while requests are in flight
        traffic.stop()
        assert gw.proc.popen is not None
        code = gw.proc.popen.returncode
        turns = local_records(data)
        figures = count_once(traffic.turn_ids, [t.id for t in turns])
        print(
            f"\n[drill sigterm gateway] sent {traffic.sent}, acknowledged {len(traffic.turn_ids)}, {figures}"
        )
        assert code == 0, gw.proc.log_tail()
        assert not (data / "ledger" / "log.sqlite-wal").exists()
        assert figures["missing"] == figures["duplicated"] == 0 and figures["found"] >= 20


def test_sigterm_stops_a_store_writer_with_exit_0(tmp_path: Path) -> None:
    rlgw = str(Path(sys.executable).with_name("rlgw"))
    proc = Proc(
        "store-writer", [rlgw, "store-writer", "--data-dir", str(tmp_path / "d")], tmp_path / "sw.log", LOCAL
    )
    with stopping([proc]):
        proc.start()
        wait_for(lambda: "store writer:" in proc.log_tail(), "the store writer to start", 60)
        assert proc.alive, proc.log_tail()
        proc.stop(30)
        assert proc.popen is not None and proc.popen.returncode == 0, proc.log_tail()
