"""Drill: a serving replica is killed under traffic. Two fake replica processes
(`python -m gateway.fake_upstream`) behind an `rlgw gateway` process, the openai SDK as the
client (no SDK retries). Non-streaming requests that had not started when the replica died
must not fail (the pool retries on the other replica before any byte reaches the client);
the dead replica shows unhealthy on /readyz, and rejoins once it listens again on its port —
proved by then stopping the other replica and still serving every request.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fixtures.drills import MEMORY_LEDGER, Traffic, fake_replica, gateway, stopping, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def replica_health(gw, index: int) -> bool:  # type: ignore[no-untyped-def]
    """/readyz numbers the replicas (their URLs are shown only to an admin key)."""
    return next(r["healthy"] for r in gw.readyz()["replicas"] if r["replica"] == index)


def test_killed_replica_fails_over_is_marked_unhealthy_and_rejoins(tmp_path: Path) -> None:
    with stopping([]) as procs:
        a, url_a = fake_replica(tmp_path, delay_ms=20)
        procs.append(a)
        b, url_b = fake_replica(tmp_path, delay_ms=20)
        procs.append(b)
        gw = gateway(tmp_path / "gw", [url_a, url_b], MEMORY_LEDGER)
        procs.append(gw)
        t0 = time.monotonic()
        traffic = Traffic(gw.root + "/v1", rate_per_s=20).start()
        time.sleep(3)
        killed_at = time.time()
        a.kill()  # SIGKILL mid-traffic
        marked_s = wait_for(lambda: not replica_health(gw, 0), "/readyz to show the dead replica", 10)
        time.sleep(3)
        port_a = int(url_a.rsplit(":", 1)[1].split("/")[0])
        a2, _ = fake_replica(tmp_path, port=port_a, delay_ms=20)  # restarted on its port
        procs.append(a2)
        restarted = time.monotonic()
        wait_for(lambda: replica_health(gw, 0), "the replica to rejoin", 10)
        rejoin_s = time.monotonic() - restarted
        time.sleep(1)
        b.stop()  # now only the rejoined replica can answer
        time.sleep(3)
        traffic.stop()
        after_kill = [f for f in traffic.failed if f[0] > killed_at]
        print(
            f"\n[drill replica-kill] requests sent {traffic.sent}, failed {len(traffic.failed)} "
            f"(started after the kill {len(after_kill)}), dead replica unhealthy on /readyz after "
            f"{marked_s:.2f} s, rejoined {rejoin_s:.2f} s after its restart; "
            f"drill {time.monotonic() - t0:.1f} s"
        )
        assert after_kill == [], after_kill[:3]
        assert traffic.failed == [], traffic.failed[:3]  # nothing in flight failed either (non-streaming)
        assert traffic.sent > 150
