"""Versions that survive: the versions topic rebuilds a restarted gateway, every gateway routes an
episode alike, feedback finds a turn on any gateway, and a canary decision is one of the data."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway.canary import Arm, decide
from gateway.config import VersionsConfig
from gateway.versions import canary_bucket
from ledger.bus import MemoryBus
from ledger.records import FailedCall, ModelVersion, Score, parse_record
from rlgw.config import Settings
from tests.fixtures.upstream import GatewayServer, gateway_settings, start_fake, start_gateway, stop_gateway

MSG: Any = [{"role": "user", "content": "hi"}]


def _settings(tmp_path: Path, url: str, control: bool = True) -> Settings:
    s = gateway_settings(tmp_path, [url])
    s.versions.canary_share, s.versions.min_episodes, s.versions.control = 0.5, 10, control
    return s


def _post(gw: GatewayServer, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(gw.root + path, json=body, timeout=10)


def _score(bus: MemoryBus, version: str, episode: str, total: float, at: float) -> None:
    s = Score(episode_id=episode, rubric="r", rubric_version="1", total=total, version=version, created_at=at)
    bus.publish("scores", [(episode, s.to_bytes())])


def _until(cond: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _stop(gw: GatewayServer) -> None:
    stop_gateway(gw)
    _until(lambda: not gw.server.started or gw.server.should_exit, "the gateway to stop")
    time.sleep(0.3)  # its lifespan closes the feeds and the controller


@contextmanager
def controller_and_follower(
    tmp_path: Path, url: str, bus: MemoryBus
) -> Iterator[tuple[GatewayServer, GatewayServer]]:
    """Gateway a controls the versions and b follows them, both on `bus`; on exit both stop, a
    as a restart would find it (its feeds and controller closed)."""
    a = start_gateway(_settings(tmp_path / "a", url), bus)
    b = start_gateway(_settings(tmp_path / "b", url, control=False), bus)
    try:
        yield a, b
    finally:
        stop_gateway(b)
        _stop(a)


def test_a_restarted_controller_serves_canaries_and_decides_as_before(tmp_path: Path) -> None:
    up, bus = start_fake(), MemoryBus()
    first = start_gateway(_settings(tmp_path / "a", up.url), bus)
    try:
        for vid in ("v1", "v2"):
            assert (
                _post(first, "/admin/versions", {"version": vid, "adapter_path": f"/tmp/{vid}"}).status_code
                == 200
            )
        assert _post(first, "/admin/versions/v1/promote").status_code == 200
        reg = first.services.versions
        _until(lambda: reg.canary == "v2", "v2, queued, to be canaried next")
        assert reg.serving == "v1"
        since = reg.versions["v2"].canary_since
        assert since is not None
        for i in range(6):  # too few for a decision
            _score(bus, "v2", f"c{i}", 1.0, since + 1 + i)
            _score(bus, "v1", f"p{i}", 0.0 if i % 3 else 1.0, since + 1 + i)
        _until(lambda: reg.stats.arm("v2", since).n == 6, "the scores on the first gateway")
        before = reg.listing()
    finally:
        _stop(first)
    second = start_gateway(_settings(tmp_path / "a", up.url), bus)  # same ledger, new process state
    try:
        reg2 = second.services.versions
        assert (reg2.serving, reg2.canary) == ("v1", "v2")  # restored before it served
        assert reg2.versions["v2"].canary_since == since
        _until(lambda: reg2.stats.arm("v2", since).n == 6, "the scores read back")
        after = {v["id"]: v for v in reg2.listing()}
        for v in before:
            assert (after[v["id"]]["status"], after[v["id"]]["episodes"], after[v["id"]]["reward"]) == (
                v["status"],
                v["episodes"],
                v["reward"],
            )
        for i in range(6, 14):  # the rest of the data: the canary is better
            _score(bus, "v2", f"c{i}", 1.0, since + 1 + i)
            _score(bus, "v1", f"p{i}", 0.0 if i % 3 else 1.0, since + 1 + i)
        _until(lambda: reg2.serving == "v2", "the restarted controller to promote the canary", 15)
        expected = decide(reg2.stats.arm("v2", since), reg2.stats.arm("v1", since), reg2.cfg)
        promoted = [e for e in reg2.events if e.event == "promoted" and e.version == "v2"]
        assert expected is not None and expected.action == "promote"
        assert promoted[0].figures["decided_canary_n"] == expected.figures["decided_canary_n"]
        on_topic = [
            r for m in bus.messages("versions") if isinstance(r := parse_record(m.value), ModelVersion)
        ]
        assert [e.id for e in on_topic] == [e.id for e in reg2.events]  # written first, one order
    finally:
        stop_gateway(second)
        up.stop.set()


def test_every_gateway_routes_an_episode_to_the_same_version(tmp_path: Path) -> None:
    up, bus = start_fake(), MemoryBus()
    try:
        with controller_and_follower(tmp_path, up.url, bus) as (a, b):
            _post(a, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1"})
            _until(lambda: b.services.versions.canary == "v1", "the follower to see the canary")
            ca = openai.OpenAI(base_url=a.url, api_key="x", max_retries=0)
            cb = openai.OpenAI(base_url=b.url, api_key="x", max_retries=0)
            served: dict[str, set[str]] = {}
            for i in range(40):
                for client in (cb, ca) if i % 2 else (ca, cb):  # each episode on both gateways at once
                    raw = client.chat.completions.with_raw_response.create(
                        model="rlgw", messages=MSG, extra_headers={"X-Episode-Id": f"ep{i}"}
                    )
                    served.setdefault(f"ep{i}", set()).add(raw.headers["x-model-version"])
            assert all(len(v) == 1 for v in served.values()), served
            for eid, versions in served.items():
                want = "v1" if canary_bucket(eid, "v1") < 0.5 else "base"
                assert versions == {want}
            assert 8 <= sum(v == {"v1"} for v in served.values()) <= 32
    finally:
        up.stop.set()


def test_feedback_by_turn_id_on_another_gateway_and_after_a_restart(tmp_path: Path) -> None:
    up, bus = start_fake(), MemoryBus()
    with controller_and_follower(tmp_path, up.url, bus) as (a, b):
        c = openai.OpenAI(base_url=a.url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="rlgw", messages=MSG, extra_headers={"X-Episode-Id": "ep-fb"}
        )
        turn = raw.headers["x-turn-id"]
        r = _post(b, "/v1/feedback", {"turn_id": turn, "name": "thumbs", "value": True})  # at once
        assert r.status_code == 200 and r.json()["episode_id"] == "ep-fb", r.text
        unknown = _post(b, "/v1/feedback", {"turn_id": "not-a-turn", "name": "thumbs", "value": True})
        assert unknown.status_code == 404
    again = start_gateway(_settings(tmp_path / "a", up.url), bus)
    try:
        r = _post(again, "/v1/feedback", {"turn_id": turn, "name": "thumbs", "value": False})
        assert r.status_code == 200 and r.json()["episode_id"] == "ep-fb", r.text
    finally:
        stop_gateway(again)
        up.stop.set()


def test_a_change_the_versions_topic_cannot_take_is_not_made(tmp_path: Path) -> None:
    up, bus = start_fake(), MemoryBus()
    gw = start_gateway(_settings(tmp_path, up.url), bus)
    try:
        _post(gw, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1"})
        bus.available = False
        r = _post(gw, "/admin/versions/v1/promote")
        assert r.status_code == 503 and r.json()["error"]["code"] == "version_log_unavailable"
        assert gw.services.versions.serving == "base" and gw.services.versions.canary == "v1"
        bus.available = True
        assert _post(gw, "/admin/versions/v1/promote").status_code == 200
    finally:
        stop_gateway(gw)
        up.stop.set()


def _arm(values: list[float], times: list[float]) -> Arm:
    return Arm(tuple(values), reward_at=tuple(times))


def test_a_decision_is_one_of_the_data_not_of_when_it_was_looked_at() -> None:
    cfg = VersionsConfig(min_episodes=10, confidence=0.9)
    rng = random.Random(7)
    c = [float(rng.random() < 0.8) for _ in range(80)]
    p = [float(rng.random() < 0.3) for _ in range(80)]
    t = [float(i) for i in range(80)]
    full = decide(_arm(c, t), _arm(p, t), cfg)
    assert full is not None and full.action == "promote"
    for look in range(int(full.at) + 1, 80, 7):  # a gateway that looked later (it restarted)
        later = decide(_arm(c[:look], t[:look]), _arm(p[:look], t[:look]), cfg)
        assert later is not None and (later.action, later.at) == (full.action, full.at)


def test_looking_every_step_keeps_false_decisions_under_alpha() -> None:
    """A/A: equal versions, every prefix looked at; a fixed 90% interval would decide in most runs."""
    cfg = VersionsConfig(min_episodes=20, confidence=0.9, max_canary_episodes=400)
    rng = random.Random(11)
    wrong = 0
    runs = 200
    for _ in range(runs):
        c = [float(rng.random() < 0.5) for _ in range(300)]
        p = [float(rng.random() < 0.5) for _ in range(300)]
        t = [float(i) for i in range(300)]
        d = decide(_arm(c, t), _arm(p, t), cfg)
        wrong += d is not None and d.action in ("promote", "rollback")
    assert wrong / runs <= 0.1, wrong


def test_nothing_descending_from_a_rolled_back_version_serves_or_registers(tmp_path: Path) -> None:
    up, bus = start_fake(), MemoryBus()
    gw = start_gateway(_settings(tmp_path, up.url), bus)
    try:
        _post(gw, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1"})
        _post(gw, "/admin/versions", {"version": "v2", "adapter_path": "/tmp/v2", "parent": "v1"})
        reg = gw.services.versions
        assert reg.canary == "v1" and reg.versions["v2"].status == "loaded"
        assert _post(gw, "/admin/versions/v1/rollback").status_code == 200
        assert reg.versions["v2"].status == "retired" and reg.canary is None
        r = _post(gw, "/admin/versions", {"version": "v3", "adapter_path": "/tmp/v3", "parent": "v2"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "parent_rolled_back", r.text
        ok = _post(gw, "/admin/versions", {"version": "v4", "adapter_path": "/tmp/v4", "parent": "base"})
        assert ok.status_code == 200 and reg.canary == "v4"
    finally:
        stop_gateway(gw)
        up.stop.set()


def test_a_feed_catches_up_under_steady_traffic() -> None:
    """Turns keep coming (a poll is never empty): the feed still says when it has read the backlog."""
    import threading

    from gateway.episodes import TurnIndex
    from gateway.feeds import TurnFeed
    from gateway.versions import VersionRegistry
    from ledger.recorder import Recorder
    from ledger.records import Turn

    bus = MemoryBus()
    bus.publish(
        "turns",
        [(f"e{i}", Turn(episode_id=f"e{i}", model="m", version="base").to_bytes()) for i in range(2000)],
    )
    stop = threading.Event()

    def steady() -> None:
        i = 0
        while not stop.is_set():
            bus.publish("turns", [(f"s{i}", Turn(episode_id=f"s{i}", model="m", version="base").to_bytes())])
            i += 1
            time.sleep(0.01)

    threading.Thread(target=steady, daemon=True).start()
    reg = VersionRegistry(VersionsConfig(), Recorder(bus), lambda: "m")
    feed = TurnFeed(bus, reg, TurnIndex(), "").start()
    try:
        assert feed.caught_up.wait(10)
        assert len(reg.stats.requests_of("base")) >= 2000
    finally:
        stop.set()
        feed.close()


def test_failed_calls_of_every_gateway_count_in_the_canary_and_survive_a_restart(tmp_path: Path) -> None:
    """A call that fails without a turn is a failed call on the turns topic: the controller counts
    the follower's failures with its own, once each, and reads them back after a restart."""
    up, bus = start_fake(), MemoryBus()
    eps = [e for e in (f"ep{i}" for i in range(60)) if canary_bucket(e, "v1") < 0.5][:5]
    with controller_and_follower(tmp_path, up.url, bus) as (a, b):
        _post(a, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1"})
        _until(lambda: b.services.versions.canary == "v1", "the follower to see the canary")
        since = a.services.versions.versions["v1"].canary_since
        assert since is not None
        up.state.fail_next = 5
        for i, eid in enumerate(eps):  # three calls through a, two through b: each a 502
            gw = a if i < 3 else b
            r = httpx.post(gw.url + "/chat/completions", json={"model": "rlgw", "messages": MSG},
                           headers={"X-Episode-Id": eid}, timeout=10)  # fmt: skip
            assert r.status_code == 502 and r.headers["x-model-version"] == "v1", r.text
        arm = lambda reg: reg.stats.arm("v1", since)  # noqa: E731
        _until(lambda: arm(a.services.versions).errors == 5, "both gateways' failures on the controller")
        assert arm(a.services.versions).requests == 5  # none counted twice
        failed = [f for m in bus.messages("turns") if isinstance(f := parse_record(m.value), FailedCall)]
        assert sorted(f.episode_id for f in failed) == sorted(eps)
    again = start_gateway(_settings(tmp_path / "a", up.url), bus)
    try:
        _until(lambda: arm(again.services.versions).errors == 5, "the failures read back after a restart")
    finally:
        stop_gateway(again)
        up.stop.set()
