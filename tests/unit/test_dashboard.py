"""Dashboard: the data route's figures from registered and scored versions, the store's share,
admin scope, and assets that load nothing from elsewhere."""

from __future__ import annotations

import re
import time
from importlib import resources
from pathlib import Path

import httpx
import pytest

from gateway.auth import KeyStore
from gateway.config import VersionsConfig
from gateway.dashboard_data import StoreFigures, percentile, snapshot
from gateway.versions import VersionRegistry
from ledger.bus import MemoryBus
from ledger.memstore import MemoryStore
from ledger.published import PublishedVersion
from ledger.recorder import Recorder
from ledger.records import Score, Turn
from tests.fixtures.upstream import FakeServer, GatewayServer, gateway_settings, start_gateway, stop_gateway


def _score_versions(gw: GatewayServer, now: float) -> None:
    reg = gw.services.versions
    for i in range(10):  # two buckets of 30 s for each version
        at = now - 100 if i < 5 else now - 40
        reg.stats.rewards["v1"][f"c{i}"] = (at, 0.8 if i % 2 else 0.6)
        reg.stats.rewards["base"][f"b{i}"] = (at, 0.4 if i % 2 else 0.2)
    for i in range(10):
        reg.stats.add_request("v1", i != 0, 10.0 * (i + 1), now - 50)  # one error
        reg.stats.add_request("base", True, 5.0, now - 50)
    for _ in range(20):
        reg.stats.add_request("base", True, 7.0, now - 20)


def test_data_route_reports_each_version(gateway: GatewayServer) -> None:
    reg = gateway.services.versions
    r = httpx.post(gateway.root + "/admin/versions", json={"version": "v1", "adapter_path": "/tmp/v1"})
    assert r.status_code == 200 and r.json()["status"] == "canary", r.text
    now = time.time()
    _score_versions(gateway, now)
    data = httpx.get(gateway.root + "/admin/dashboard/data", params={"window_s": 600, "buckets": 20}).json()
    assert data["serving"] == "base" and data["canary"] == "v1" and data["bucket_s"] == 30
    assert data["canary_share"] == reg.cfg.canary_share and data["confidence"] == reg.cfg.confidence
    assert len(data["buckets"]) in (20, 21) and data["buckets"] == sorted(data["buckets"])
    by_id = {v["id"]: v for v in data["versions"]}
    v1, base = by_id["v1"], by_id["base"]
    assert v1["status"] == "canary" and v1["parent"] == "base" and v1["episodes"] == 10
    assert [p["n"] for p in v1["reward_series"]] == [5, 5]
    for p in v1["reward_series"] + base["reward_series"]:
        assert p["source"] == "live" and p["low"] < p["mean"] < p["high"]
    assert {p["mean"] for p in v1["reward_series"]} == {0.68, 0.72}  # 3x0.6+2x0.8, 2x0.6+3x0.8
    assert v1["requests"] == 10 and v1["errors"] == 1 and v1["error_rate"] == 0.1
    assert v1["latency_p50_ms"] == 60.0 and v1["latency_p99_ms"] == 100.0  # of the 9 successes
    assert base["requests"] == 30 and base["latency_p50_ms"] == 7.0 and base["latency_p99_ms"] == 7.0
    assert v1["traffic_share"] == 0.25 and base["traffic_share"] == 0.75
    assert sum(v1["requests_series"]) == 10 and len(v1["requests_series"]) == len(data["buckets"])
    assert v1["share"] == reg.cfg.canary_share and base["share"] == 1 - reg.cfg.canary_share
    events = [(d["version"], d["event"]) for d in data["decisions"]]
    assert events[:3] == [("v1", "canary"), ("v1", "loaded"), ("v1", "registered")]  # newest first
    assert "of new episodes" in data["decisions"][0]["reason"]
    assert data["rubric"] == []  # no store in this gateway
    ledger = data["ledger"]
    assert ledger["store"] == "none" and ledger["spool_records"] == 0 and ledger["recorder_pending"] >= 0

    httpx.post(gateway.root + "/admin/versions/v1/rollback", json={"reason": "from a test"})
    after = httpx.get(gateway.root + "/admin/dashboard/data").json()
    assert after["canary"] is None and after["decisions"][0]["reason"] == "from a test"


def test_store_fills_buckets_and_gives_rubric_breakdown() -> None:
    cfg = VersionsConfig()
    reg = VersionRegistry(cfg, Recorder(MemoryBus()), lambda: "fake-base")
    store = MemoryStore()
    now = 1_000_000.0
    records = []
    for i in range(4):
        at = now - 200
        turn = Turn(episode_id=f"e{i}", model="rlgw", version="base", latency_ms=12.0, created_at=at)
        score = Score(
            episode_id=f"e{i}",
            rubric="helpful",
            rubric_version="1",
            total=0.5 * (i % 2),
            values={"exact": float(i % 2), "length": None if i == 0 else 0.25},
            errors={"length": "boom"} if i == 0 else {},
            weights={"exact": 1.0, "length": 0.0},
            version="base",
            created_at=at,
        )
        records += [turn, score]
    store.write(records)
    reg.stats.rewards["base"]["live"] = (now - 10, 1.0)
    figures = StoreFigures(store)
    data = snapshot(reg, reg.recorder, figures, window_s=600, bucket_s=60, now=now)
    series = next(v for v in data["versions"] if v["id"] == "base")["reward_series"]
    assert [(p["source"], p["n"], p["mean"]) for p in series] == [("store", 4, 0.25), ("live", 1, 1.0)]
    assert series[0]["low"] is None and series[1]["low"] is None  # one live score: no interval
    rubric = {r["function"]: r for r in data["rubric"]}
    assert rubric["exact"] == {
        "version": "base",
        "rubric": "helpful",
        "function": "exact",
        "weight": 1.0,
        "n": 4,
        "mean": 0.5,
        "errors": 0,
    }
    assert (
        rubric["length"]["n"] == 3 and rubric["length"]["errors"] == 1 and rubric["length"]["weight"] == 0.0
    )
    assert data["ledger"]["store"] == "ok"
    reg.start_canary(reg.register(PublishedVersion(version="v2", adapter_path="/tmp/v2")))
    reg.rollback("v2", "reward -0.2 under its parent", {"diff": -0.2, "diff_high": -0.05})
    decision = snapshot(reg, reg.recorder, figures, window_s=600, bucket_s=60, now=now)["decisions"][0]
    assert decision["version"] == "v2" and decision["event"] == "rolled_back"
    assert decision["reason"] == "reward -0.2 under its parent"
    assert decision["figures"] == {"diff": -0.2, "diff_high": -0.05}


def test_a_failing_store_leaves_the_live_figures() -> None:
    class DownStore:
        def version_metrics(self, **_: object) -> list[object]:
            raise ConnectionError("store down")

    reg = VersionRegistry(VersionsConfig(), Recorder(MemoryBus()), lambda: "fake-base")
    reg.stats.rewards["base"]["e"] = (time.time(), 1.0)
    data = snapshot(reg, reg.recorder, StoreFigures(DownStore()), window_s=60, bucket_s=10)
    assert data["ledger"]["store"] == "error" and "store down" in data["ledger"]["store_error"]
    assert data["versions"][0]["reward_series"][0]["mean"] == 1.0


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([1.0], 0.99) == 1.0
    assert percentile([float(x) for x in range(1, 101)], 0.99) == 99.0


@pytest.fixture
def keyed(tmp_path: Path, fake_upstream: FakeServer):  # type: ignore[no-untyped-def]
    settings = gateway_settings(tmp_path, [fake_upstream.url])
    keys = KeyStore(settings.keys_path)
    admin_key, tenant_key = keys.create("ops", admin=True), keys.create("acme")
    gw = start_gateway(settings)
    yield gw, admin_key, tenant_key
    stop_gateway(gw)


def test_admin_scope_is_enforced(keyed) -> None:  # type: ignore[no-untyped-def]
    gw, admin_key, tenant_key = keyed
    url = gw.root + "/admin/dashboard/data"
    as_tenant = httpx.get(url, headers={"Authorization": f"Bearer {tenant_key}"})
    assert as_tenant.status_code == 403 and as_tenant.json()["error"]["code"] == "admin_required"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200
    assert httpx.get(gw.root + "/dashboard", params={"key": tenant_key}).status_code == 403
    assert (
        httpx.get(gw.root + "/dashboard", headers={"Authorization": f"Bearer {tenant_key}"}).status_code
        == 403
    )
    page = httpx.get(gw.root + "/dashboard", params={"key": admin_key})
    assert page.status_code == 200 and 'id="reward-chart"' in page.text
    assert httpx.get(gw.root + "/dashboard").status_code == 200  # the shell, which asks for a key
    bad = httpx.get(url, params={"window_s": "5"}, headers={"Authorization": f"Bearer {admin_key}"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "window_s"


def test_assets_ship_in_the_package_and_load_nothing_from_elsewhere(gateway: GatewayServer) -> None:
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        text = resources.files("gateway").joinpath("static", name).read_text()
        urls = set(re.findall(r"[a-z]+://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{name} refers to {urls}"
    js = httpx.get(gateway.root + "/dashboard/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "default-src 'self'" in js.headers["content-security-policy"]
    assert httpx.get(gateway.root + "/dashboard/dashboard.html").status_code == 404
    assert httpx.get(gateway.root + "/dashboard/nope.js").status_code == 404
