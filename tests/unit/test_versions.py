"""Versions: register → load into every replica → canary → promote / roll back, and the rule."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.adapters import AdapterLoader
from gateway.canary import Arm, decide
from gateway.config import VersionsConfig
from gateway.pool import Pool
from ledger.records import ModelVersion, parse_record
from tests.fixtures.upstream import GatewayServer, gateway_settings, start_fake, start_gateway, stop_gateway

MSG: Any = [{"role": "user", "content": "hi"}]


def test_decide_promotes_only_on_a_confident_gain() -> None:
    cfg = VersionsConfig(min_episodes=20, margin=0.0, confidence=0.9)
    good = Arm(tuple([1.0] * 18 + [0.0] * 2), requests=20)
    base = Arm(tuple([1.0] * 5 + [0.0] * 15), requests=20)
    assert decide(good, base, cfg).action == "promote"  # type: ignore[union-attr]
    assert decide(base, good, cfg).action == "rollback"  # type: ignore[union-attr]
    assert decide(Arm(good.rewards[:10]), base, cfg) is None  # too few episodes
    noisy = Arm(tuple([1.0, 0.0] * 10))
    assert decide(noisy, Arm(tuple([0.0, 1.0] * 10)), cfg) is None  # no difference: wait
    broken = Arm(tuple([1.0] * 3), requests=40, errors=10)
    d = decide(broken, base, cfg)
    assert d is not None and d.action == "rollback" and "error rate" in d.reason


@pytest.fixture
def two_replicas(tmp_path: Path):  # type: ignore[no-untyped-def]
    a, b = start_fake(), start_fake()
    settings = gateway_settings(tmp_path, [a.url, b.url])
    settings.versions.canary_share = 0.5
    settings.versions.min_episodes = 10
    gw = start_gateway(settings)
    yield gw, a, b
    stop_gateway(gw)
    a.stop.set()
    b.stop.set()


def admin(gw: GatewayServer, path: str, body: dict | None = None) -> httpx.Response:
    return (
        httpx.post(gw.root + path, json=body, timeout=10)
        if body is not None or path.endswith(("promote", "rollback", "pin"))
        else httpx.get(gw.root + path, timeout=10)
    )


def test_register_loads_everywhere_and_canaries_sticky_episodes(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, a, b = two_replicas
    resp = admin(gw, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1", "parent": "base"})
    assert resp.status_code == 200 and resp.json()["status"] == "canary", resp.text
    assert a.state.adapters == {"rlgw-v1": "/tmp/v1"} and b.state.adapters == {"rlgw-v1": "/tmp/v1"}
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    served: dict[str, set[str]] = {}
    for i in range(40):
        for _ in range(2):  # two turns per episode: both on one version
            raw = c.chat.completions.with_raw_response.create(
                model="rlgw",
                messages=MSG,
                extra_headers={"X-Episode-Id": f"ep{i}"},  # type: ignore[arg-type]
            )
            served.setdefault(f"ep{i}", set()).add(raw.headers["x-model-version"])
            text = raw.parse().choices[0].message.content or ""
            assert ("rlgw-v1" in text) == (raw.headers["x-model-version"] == "v1")
    assert all(len(v) == 1 for v in served.values())
    versions = [next(iter(v)) for v in served.values()]
    assert 5 <= versions.count("v1") <= 35  # canary share 0.5 of 40 episodes
    again = admin(
        gw, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1"}
    )  # a learner's re-publish
    assert again.status_code == 200 and again.json()["status"] == "canary"
    dup = admin(gw, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/other"})
    assert dup.status_code == 400 and dup.json()["error"]["code"] == "version_exists"


def test_live_reward_promotes_then_operator_rolls_back(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, _, _ = two_replicas
    admin(gw, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1"})
    reg = gw.services.versions
    for i in range(15):
        reg.observe_score("v1", f"c{i}", 1.0 if i % 5 else 0.0)
        reg.observe_score("base", f"b{i}", 0.0 if i % 5 else 1.0)
    fut = asyncio.run_coroutine_threadsafe(gw.services.controller.tick(), _loop_of(gw))
    fut.result(10)
    listing = admin(gw, "/admin/versions").json()
    assert listing["serving"] == "v1" and listing["canary"] is None
    v1 = next(v for v in listing["versions"] if v["id"] == "v1")
    assert v1["episodes"] == 15 and v1["reward_interval"][0] < v1["reward"] < v1["reward_interval"][1]
    back = admin(gw, "/admin/rollback", {"reason": "operator test"})
    assert back.status_code == 200 and back.json()["serving"] == "base"
    gw.services.recorder.flush(5)
    events = [parse_record(m.value) for m in gw.bus.messages("versions")]
    assert [e.event for e in events if isinstance(e, ModelVersion)] == [
        "registered",
        "loaded",
        "canary",
        "promoted",
        "rolled_back",
    ]
    assert events[-1].reason == "operator test"  # type: ignore[attr-defined]


def test_worse_canary_is_rolled_back_and_leaves_traffic(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, _, _ = two_replicas
    admin(gw, "/admin/versions", {"version": "bad", "adapter_path": "/tmp/bad"})
    reg = gw.services.versions
    for i in range(12):
        reg.observe_score("bad", f"c{i}", 0.0)
        reg.observe_score("base", f"b{i}", 1.0 if i % 4 else 0.0)
    asyncio.run_coroutine_threadsafe(gw.services.controller.tick(), _loop_of(gw)).result(10)
    assert reg.canary is None and reg.versions["bad"].status == "rolled_back"
    assert "under its parent" in reg.events[-1].reason
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    for _ in range(10):
        raw = c.chat.completions.with_raw_response.create(model="rlgw", messages=MSG)  # type: ignore[arg-type]
        assert raw.headers["x-model-version"] == "base"


def test_pinned_canary_is_not_judged_and_rejoined_replica_gets_adapters(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, a, _ = two_replicas
    admin(gw, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1"})
    assert admin(gw, "/admin/versions/v1/pin").json()["pinned"] is True
    reg = gw.services.versions
    for i in range(12):
        reg.observe_score("v1", f"c{i}", 0.0)
        reg.observe_score("base", f"b{i}", 1.0)
    a.state.adapters.clear()  # replica a restarted and lost its adapters
    gw.services.pool.replicas[0].models = ["fake-base"]
    asyncio.run_coroutine_threadsafe(gw.services.controller.tick(), _loop_of(gw)).result(10)
    assert reg.canary == "v1"  # pinned: held
    assert a.state.adapters == {"rlgw-v1": "/tmp/v1"}


def test_base_served_through_zero_adapter_and_errors(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, _, _ = two_replicas
    r = admin(gw, "/admin/versions", {"version": "z0", "adapter_path": "/tmp/z0", "base_equivalent": True})
    assert r.status_code == 200
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    text = c.chat.completions.create(model="rlgw", messages=MSG).choices[0].message.content  # type: ignore[arg-type]
    assert text is not None and "rlgw-base-z0" in text
    assert admin(gw, "/admin/versions/nope/promote").status_code == 404
    bad = admin(gw, "/admin/versions", {"adapter_path": "/x"})
    assert bad.status_code == 400 and "version" in bad.json()["error"]["message"]
    misspelt = admin(gw, "/admin/versions", {"version": "v9", "adapter_pth": "/x", "adapter_path": "/x"})
    assert misspelt.status_code == 400 and "adapter_pth" in misspelt.json()["error"]["message"]


def test_a_version_id_that_cannot_travel_in_a_header_is_refused(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, _, _ = two_replicas
    for vid in ("v\U0001c95b", "v 1", "a/b", "x" * 201, "base"):
        r = admin(gw, "/admin/versions", {"version": vid, "adapter_path": "/x"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "version", vid
    assert admin(gw, "/admin/versions", {"version": "v1-abc.2", "adapter_path": "/x"}).status_code == 200


def _loop_of(gw: GatewayServer) -> asyncio.AbstractEventLoop:
    """The gateway server's event loop (the controller's tasks live there)."""
    task = gw.services.controller._task
    assert task is not None
    return task.get_loop()


def test_versions_cli_against_a_live_gateway(two_replicas) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from rlgw.cli import app

    gw, _, _ = two_replicas
    admin(gw, "/admin/versions", {"version": "v7", "adapter_path": "/tmp/v7"})
    runner = CliRunner()
    listed = runner.invoke(app, ["versions", "list", "--url", gw.root])
    assert listed.exit_code == 0 and "v7" in listed.stdout and "canary" in listed.stdout
    promoted = runner.invoke(app, ["versions", "promote", "v7", "--url", gw.root])
    assert promoted.exit_code == 0 and gw.services.versions.serving == "v7"
    back = runner.invoke(app, ["versions", "rollback", "--url", gw.root])
    assert back.exit_code == 0 and gw.services.versions.serving == "base"
    missing = runner.invoke(app, ["versions", "promote", "nope", "--url", gw.root])
    assert missing.exit_code == 1


def test_versions_arriving_during_a_canary_wait_and_the_newest_goes_next(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, _, _ = two_replicas
    for vid in ("v1", "v2", "v3"):
        assert (
            admin(gw, "/admin/versions", {"version": vid, "adapter_path": f"/tmp/{vid}"}).status_code == 200
        )
    reg = gw.services.versions
    assert reg.canary == "v1" and reg.versions["v2"].status == "loaded"
    for i in range(12):
        reg.observe_score("v1", f"c{i}", 1.0)
        reg.observe_score("base", f"b{i}", 0.0 if i % 3 else 1.0)
    asyncio.run_coroutine_threadsafe(gw.services.controller.tick(), _loop_of(gw)).result(10)
    assert reg.serving == "v1" and reg.canary == "v3" and reg.versions["v2"].status == "retired"


def test_a_following_gateway_mirrors_the_controlling_one(tmp_path: Path) -> None:
    import time

    from ledger.bus import MemoryBus

    up = start_fake()
    bus = MemoryBus()
    control = start_gateway(gateway_settings(tmp_path / "a", [up.url]), bus)
    follower_settings = gateway_settings(tmp_path / "b", [up.url])
    follower_settings.versions.control = False
    follower = start_gateway(follower_settings, bus)
    try:
        admin(control, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1"})
        admin(control, "/admin/versions/v1/promote")
        deadline = time.monotonic() + 10
        while follower.services.versions.serving != "v1":
            assert time.monotonic() < deadline, "the follower never saw the promotion"
            time.sleep(0.05)
        c = openai.OpenAI(base_url=follower.url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(model="rlgw", messages=MSG)  # type: ignore[arg-type]
        assert raw.headers["x-model-version"] == "v1" and "rlgw-v1" in (
            raw.parse().choices[0].message.content or ""
        )
        refused = admin(follower, "/admin/versions", {"version": "v2", "adapter_path": "/tmp/v2"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_controlling_gateway"
    finally:
        stop_gateway(control)
        stop_gateway(follower)
        up.stop.set()


def test_decide_does_not_trust_zero_variance_of_a_rare_reward() -> None:
    cfg = VersionsConfig(min_episodes=20, confidence=0.9)
    no_hits = Arm(tuple([0.0] * 20))  # a 5% reward often scores 0 twenty times in a row
    base = Arm(tuple([1.0] * 5 + [0.0] * 95))
    assert decide(no_hits, base, cfg) is None


def test_retired_versions_are_unloaded_but_the_rollback_target_stays(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, a, b = two_replicas
    for vid in ("v1", "v2", "v3"):
        admin(gw, "/admin/versions", {"version": vid, "adapter_path": f"/tmp/{vid}"})
        admin(gw, f"/admin/versions/{vid}/promote")
    asyncio.run_coroutine_threadsafe(gw.services.controller.tick(), _loop_of(gw)).result(10)
    for replica in (a, b):
        assert set(replica.state.adapters) == {"rlgw-v2", "rlgw-v3"}  # serving + its rollback target
    back = admin(gw, "/admin/rollback", {"reason": "test"})
    assert back.json()["serving"] == "v2"  # instant: v2 was still loaded


def test_an_inconclusive_canary_makes_way_for_the_next(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, _, _ = two_replicas
    gw.services.settings.versions.max_canary_episodes = 40
    for vid in ("v1", "v2"):
        admin(gw, "/admin/versions", {"version": vid, "adapter_path": f"/tmp/{vid}"})
    reg = gw.services.versions
    for i in range(40):  # the same reward on both sides: never significant
        reg.observe_score("v1", f"c{i}", float(i % 2))
        reg.observe_score("base", f"b{i}", float(i % 2))
    asyncio.run_coroutine_threadsafe(gw.services.controller.tick(), _loop_of(gw)).result(10)
    assert reg.serving == "base" and reg.canary == "v2" and reg.versions["v1"].status == "retired"
    assert any(e.event == "inconclusive" and e.version == "v1" for e in reg.events)


def test_a_probe_listing_taken_before_a_load_does_not_hide_the_adapter(fake_upstream) -> None:  # type: ignore[no-untyped-def]
    """Otherwise the controller would see the adapter missing and load it again."""
    fake_upstream.state.models_delay_s = 1.0

    async def main() -> list[str]:
        pool = Pool([fake_upstream.url])
        replica = pool.replicas[0]
        try:
            probe = asyncio.create_task(pool.check(replica))
            await asyncio.sleep(0.3)  # the fake has taken its listing, without the adapter
            await AdapterLoader(pool).load(replica, "rlgw-v1", "/tmp/v1")
            assert await probe
            return replica.models
        finally:
            await pool.close()

    assert "rlgw-v1" in asyncio.run(main())


def test_a_register_is_not_queued_behind_the_loops_unloads(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, a, b = two_replicas
    controller, loop = gw.services.controller, _loop_of(gw)
    loop.call_soon_threadsafe(controller._task.cancel)  # ticks by hand from here
    for vid in ("v1", "v2", "v3"):
        admin(gw, "/admin/versions", {"version": vid, "adapter_path": f"/tmp/{vid}"})
        admin(gw, f"/admin/versions/{vid}/promote")
    a.state.unload_delay_s = 5.0
    tick = asyncio.run_coroutine_threadsafe(controller.tick(), loop)
    while "rlgw-v1" in b.state.adapters:  # b unloaded v1; a is still unloading it
        time.sleep(0.01)
    resp = admin(gw, "/admin/versions", {"version": "v4", "adapter_path": "/tmp/v4"})
    assert resp.status_code == 200 and resp.json()["status"] == "canary"
    assert not tick.done()
    tick.result(15)
    assert "rlgw-v1" not in a.state.adapters and "rlgw-v4" in a.state.adapters
    loaded = next(e for e in gw.services.versions.events if e.event == "loaded" and e.version == "v4")
    assert set(loaded.figures["load_ms"]) == {a.url, b.url} and loaded.figures["queued_ms"] >= 0


def test_an_episode_whose_version_was_unloaded_moves_to_the_serving_one(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, a, _ = two_replicas
    controller, loop, reg = gw.services.controller, _loop_of(gw), gw.services.versions
    loop.call_soon_threadsafe(controller._task.cancel)  # ticks by hand from here
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    admin(gw, "/admin/versions", {"version": "v1", "adapter_path": "/tmp/v1"})
    admin(gw, "/admin/versions/v1/promote")
    first = c.chat.completions.with_raw_response.create(model="rlgw", messages=MSG, user="old")  # type: ignore[arg-type]
    assert first.headers["x-model-version"] == "v1"
    for vid in ("v2", "v3"):
        admin(gw, "/admin/versions", {"version": vid, "adapter_path": f"/tmp/{vid}"})
        admin(gw, f"/admin/versions/{vid}/promote")
    for i in range(1000):  # the episode drops out of the recent history
        reg.route(f"new{i}", "default")
    asyncio.run_coroutine_threadsafe(controller.tick(), loop).result(10)
    assert "rlgw-v1" not in a.state.adapters
    later = c.chat.completions.with_raw_response.create(model="rlgw", messages=MSG, user="old")  # type: ignore[arg-type]
    assert later.headers["x-model-version"] == "v3"


def _three_versions_with_v1_unloaded(gw: Any) -> None:
    """v1 -> v2 -> v3 (each the parent of the next), each promoted; a tick unloads v1."""
    controller, loop = gw.services.controller, _loop_of(gw)
    loop.call_soon_threadsafe(controller._task.cancel)  # ticks by hand from here
    for parent, vid in ((None, "v1"), ("v1", "v2"), ("v2", "v3")):
        admin(gw, "/admin/versions", {"version": vid, "adapter_path": f"/tmp/{vid}", "parent": parent})
        admin(gw, f"/admin/versions/{vid}/promote")
    asyncio.run_coroutine_threadsafe(controller.tick(), loop).result(10)


def _served_by_both_replicas(gw: Any, a: Any, b: Any, version: str) -> None:
    name = gw.services.versions.upstream_name(version)
    assert name in a.state.adapters and name in b.state.adapters
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    for i in range(6):  # requests spread over both replicas; none meets a missing adapter
        r = c.chat.completions.with_raw_response.create(model="rlgw", messages=MSG, user=f"u{i}")  # type: ignore[arg-type]
        assert r.headers["x-model-version"] == version


def test_promoting_an_unloaded_version_loads_it_before_routing_to_it(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, a, b = two_replicas
    _three_versions_with_v1_unloaded(gw)
    assert "rlgw-v1" not in a.state.adapters and "rlgw-v1" not in b.state.adapters
    assert admin(gw, "/admin/versions/v1/promote").status_code == 200
    _served_by_both_replicas(gw, a, b, "v1")


def test_rolling_back_to_an_unloaded_parent_loads_it_before_routing_to_it(two_replicas) -> None:  # type: ignore[no-untyped-def]
    gw, a, b = two_replicas
    _three_versions_with_v1_unloaded(gw)
    assert admin(gw, "/admin/rollback", {"reason": "test"}).json()["serving"] == "v2"  # still loaded
    assert "rlgw-v1" not in a.state.adapters
    back = admin(gw, "/admin/rollback", {"reason": "test"})
    assert back.status_code == 200 and back.json()["serving"] == "v1", back.text
    _served_by_both_replicas(gw, a, b, "v1")
