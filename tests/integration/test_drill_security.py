"""Drill: security. Two tenants and an admin on a real gateway (uvicorn over HTTP, the fake
upstream behind it); the records it writes go through a real rubric worker into the memory store
that serves its episode reads, and `rlgw export`'s collector reads that store.

Tenant A's key cannot read, give feedback on, or export tenant B's episodes, even when both
use one episode id (clients choose ids); tenant keys are refused on every /admin route (the
app's routes are enumerated, so new ones are covered); keys are never logged nor stored in clear.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from gateway.auth import KeyStore
from ledger.memstore import MemoryStore
from ledger.records import Feedback, Turn, parse_record
from rewards import EpisodeView, Rubric, reward
from rewards.worker import RubricWorker
from rlgw.export_cmd import collect
from tests.fixtures.upstream import GatewayServer, gateway_settings, start_fake, start_gateway, stop_gateway

pytestmark = pytest.mark.integration


@reward(inline=True)
def answered(ep: EpisodeView) -> float:
    return float(bool(ep.final_answer))


@dataclass
class Site:
    gw: GatewayServer
    store: MemoryStore
    keys: dict[str, str] = field(repr=False)  # a, b, admin
    data_dir: Path = Path()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    fake = start_fake()
    settings = gateway_settings(tmp_path, [fake.url])
    store = KeyStore(settings.keys_path)
    keys = {"a": store.create("a"), "b": store.create("b"), "admin": store.create("ops", admin=True)}
    gw = start_gateway(settings)
    gw.services.store = MemoryStore()
    yield Site(gw, gw.services.store, keys, tmp_path)
    stop_gateway(gw)
    fake.stop.set()


def call(site: Site, who: str | None, method: str, path: str, **kw: object) -> httpx.Response:
    headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
    if who is not None:
        headers["Authorization"] = f"Bearer {site.keys.get(who, who)}"
    return httpx.request(method, site.gw.root + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def chat(site: Site, who: str, episode: str, text: str) -> httpx.Response:
    body = {"model": "rlgw", "messages": [{"role": "user", "content": text}]}
    resp = call(site, who, "POST", "/v1/chat/completions", json=body, headers={"X-Episode-Id": episode})
    assert resp.status_code == 200, resp.text
    return resp


def settle(site: Site) -> None:
    """Wait for the recorder, score every closed episode, and load everything into the store."""
    rec = site.gw.services.recorder
    deadline = time.monotonic() + 10
    while rec.pending:
        assert time.monotonic() < deadline, "recorder did not drain"
        time.sleep(0.02)
    worker = RubricWorker([Rubric("answered", [answered])], site.gw.bus, group="drill")
    asyncio.run(worker.step(timeout_s=0))
    worker.close()
    for topic in ("turns", "feedback", "scores"):
        site.store.write([parse_record(m.value) for m in site.gw.bus.messages(topic)])


def test_tenants_cannot_read_feed_back_on_or_export_each_other(site: Site) -> None:
    chat(site, "a", "shared", "alpha secret question")
    b_turn = chat(site, "b", "shared", "bravo secret question").headers["x-turn-id"]
    chat(site, "b", "b-only", "bravo private")
    chat(site, "b", "b-private", "bravo never named by a")
    for who, eid in (("a", "shared"), ("b", "shared"), ("b", "b-only")):
        assert call(site, who, "POST", f"/v1/episodes/{eid}/end").status_code == 200

    # feedback: on B's turn (known to this gateway) is refused; by B's episode id it lands in A's own
    resp = call(site, "a", "POST", "/v1/feedback", json={"turn_id": b_turn, "name": "thumbs", "value": False})
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"
    for eid in ("b-only", "shared"):
        body = {"episode_id": eid, "name": "thumbs", "value": False, "done": True}
        assert call(site, "a", "POST", "/v1/feedback", json=body).status_code == 200
    settle(site)

    # reads
    assert call(site, "a", "GET", "/v1/episodes/b-private").status_code == 404
    a_only = call(site, "a", "GET", "/v1/episodes/b-only").json()  # A's own feedback, nothing of B's
    assert a_only["tenant"] == "a" and a_only["turns"] == [] and "bravo" not in str(a_only)
    shared = call(site, "a", "GET", "/v1/episodes/shared").json()
    assert shared["tenant"] == "a" and "bravo" not in str(shared)
    assert [t["tenant"] for t in shared["turns"]] == ["a"]
    b_view = call(site, "b", "GET", "/v1/episodes/shared").json()
    assert "alpha" not in str(b_view) and b_view["feedback"] == []  # A's feedback never reached it
    assert call(site, "b", "GET", "/v1/episodes/b-only").json()["feedback"] == []
    admin_b = call(site, "admin", "GET", "/admin/episodes/shared", params={"tenant": "b"}).json()
    assert admin_b["tenant"] == "b" and "alpha" not in str(admin_b)

    # scores: one per tenant's episode, never a merged one
    by_tenant = {(s.score.tenant, s.score.episode_id) for s in site.store.scored(settle_s=0)}
    assert {("a", "shared"), ("b", "shared"), ("b", "b-only")} <= by_tenant
    for s in site.store.scored(settle_s=0):
        assert {t.tenant for t in s.episode.turns} == {s.score.tenant}
        assert {f.tenant for f in s.episode.feedback} <= {s.score.tenant}

    # export
    sft, dpo = collect(site.store, since=None, tenant="a", rubric=None, min_reward=None)
    assert sft and {r["tenant"] for r in sft} == {"a"}
    assert "bravo" not in str(sft) + str(dpo)
    sft_b, _ = collect(site.store, since=None, tenant="b", rubric=None, min_reward=None)
    assert {r["episode_id"] for r in sft_b} == {"shared", "b-only"} and "alpha" not in str(sft_b)


def _admin_routes(site: Site) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    app = site.gw.server.config.app.app  # type: ignore[union-attr]  # the HotPath's FastAPI app
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith("/admin"):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            out.extend((m, path) for m in sorted(route.methods or ()) if m != "HEAD")
    return out


def test_tenant_keys_cannot_call_any_admin_route(site: Site) -> None:
    routes = _admin_routes(site)
    assert ("POST", "/admin/versions") in routes and ("GET", "/admin/episodes/x") in routes
    assert len(routes) >= 10
    for method, path in routes:
        for who, status in (("a", 403), (None, 401), ("rlgw-not-a-key", 401)):
            resp = call(site, who, method, path, json={})
            assert resp.status_code == status, f"{who} {method} {path}: {resp.status_code} {resp.text}"
            assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert call(site, "admin", "GET", "/admin/versions").status_code == 200
    assert call(site, "a", "GET", "/dashboard").status_code == 403


def test_keys_are_never_logged_nor_stored_in_clear(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    bad = "rlgw-" + "x" * 43
    with caplog.at_level(logging.DEBUG):
        chat(site, "a", "e1", "hello")
        call(site, bad, "POST", "/v1/chat/completions", json={"model": "rlgw", "messages": []})
        call(site, "a", "POST", "/v1/chat/completions", content=b"{broken")
        call(site, "a", "GET", "/admin/versions")
        call(site, bad, "GET", "/v1/models")
        body = {"episode_id": "e1", "name": "n", "value": 1}
        call(site, "a", "POST", "/v1/feedback", json=body, headers={"X-Debug": site.keys["a"]})
        settle(site)
    secrets = [*site.keys.values(), bad]
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records, "no logs were captured: the check would prove nothing"
    for key in secrets:
        assert key not in logged
    records = [m.value for t in ("turns", "feedback", "scores") for m in site.gw.bus.messages(t)]
    assert any(isinstance(parse_record(r), Turn) for r in records)
    assert any(isinstance(parse_record(r), Feedback) for r in records)
    stored = str([e.model_dump() for e in site.store.episodes(limit=1000)])
    on_disk = [p.read_bytes() for p in site.data_dir.rglob("*") if p.is_file()]
    assert any(b"sha256" in blob for blob in on_disk), "the keys file was not found"
    for key in secrets:
        assert all(key.encode() not in r for r in records)
        assert key not in stored
        assert all(key.encode() not in blob for blob in on_disk)
