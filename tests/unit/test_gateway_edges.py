"""Bad input, auth, feedback, failover and the operational endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.auth import KeyStore
from gateway.fake_upstream import FakeState
from ledger.records import FailedCall, Feedback, Turn, parse_record
from tests.fixtures.upstream import (
    FakeServer,
    GatewayServer,
    free_port,
    gateway_settings,
    start_fake,
    start_gateway,
    stop_gateway,
)

MSG: Any = [{"role": "user", "content": "hi"}]


def post(gw: GatewayServer, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    h = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(gw.url + "/chat/completions", content=content, headers=h, timeout=10)


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_json"),
        (b"[1, 2]", 400, None),
        (orjson.dumps({"model": "rlgw", "messages": [{"content": "no role"}]}), 400, None),
        (orjson.dumps({"model": 7, "messages": MSG}), 400, None),
        (orjson.dumps({"model": "rlgw", "messages": MSG, "stream": "yes"}), 400, None),
    ],
)
def test_malformed_bodies(gateway: GatewayServer, content: bytes, status: int, code: str | None) -> None:
    resp = post(gateway, content)
    assert resp.status_code == status
    assert error_of(resp)["code"] == code


def test_body_over_limit_is_413(tmp_path: Path, fake_upstream: FakeServer) -> None:
    gw = start_gateway(gateway_settings(tmp_path, [fake_upstream.url], max_body_bytes=1000))
    try:
        big = orjson.dumps({"model": "rlgw", "messages": [{"role": "user", "content": "x" * 5000}]})
        resp = post(gw, big)
        assert resp.status_code == 413 and error_of(resp)["code"] == "body_too_large"
    finally:
        stop_gateway(gw)


def test_failover_to_healthy_replica_and_recovery(tmp_path: Path, fake_upstream: FakeServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(gateway_settings(tmp_path, [dead, fake_upstream.url]))
    try:
        c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
        for _ in range(6):
            assert c.chat.completions.create(model="rlgw", messages=MSG).choices[0].message.content  # type: ignore[arg-type]
        pool = gw.services.pool
        assert [r.healthy for r in pool.replicas] == [False, True]
        ready = httpx.get(gw.root + "/readyz").json()
        assert ready["status"] == "ready"
    finally:
        stop_gateway(gw)


def test_all_replicas_down_is_502_then_503(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(gateway_settings(tmp_path, [dead], base_model="m"))
    try:
        resp = post(gw, orjson.dumps({"model": "rlgw", "messages": MSG}))
        assert resp.status_code == 502 and error_of(resp)["type"] == "upstream_error"
        assert httpx.get(gw.root + "/readyz").status_code == 503
    finally:
        stop_gateway(gw)


def test_upstream_timeout_is_504(tmp_path: Path) -> None:
    slow = start_fake(FakeState(delay_s=2.0))
    gw = start_gateway(gateway_settings(tmp_path, [slow.url], request_timeout_s=0.3))
    try:
        resp = post(gw, orjson.dumps({"model": "rlgw", "messages": MSG}))
        assert resp.status_code == 504 and error_of(resp)["code"] == "upstream_timeout"
        gw.services.recorder.flush(5)  # no turn, but a failed call for every gateway's error rate
        [failed] = [parse_record(m.value) for m in gw.bus.messages("turns")]
        assert isinstance(failed, FailedCall) and (failed.error, failed.status) == ("upstream_timeout", 504)
        assert (
            failed.version == "base" and failed.episode_id and failed.latency_ms >= 250
        )  # the 0.3 s timeout (299.6 ms was seen)
    finally:
        stop_gateway(gw)
        slow.stop.set()


def test_upstream_without_token_ids_still_serves(tmp_path: Path) -> None:
    plain = start_fake(FakeState(token_ids=False))
    gw = start_gateway(gateway_settings(tmp_path, [plain.url]))
    try:
        c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
        assert c.chat.completions.create(model="rlgw", messages=MSG).choices[0].message.content  # type: ignore[arg-type]
        gw.services.recorder.flush(5)
        [turn] = [parse_record(m.value) for m in gw.bus.messages("turns")]
        assert isinstance(turn, Turn) and not turn.tokens_recorded and turn.prompt_token_ids is None
    finally:
        stop_gateway(gw)
        plain.stop.set()


def test_keys_tenants_and_admin_scope(tmp_path: Path, fake_upstream: FakeServer) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    tenant_key = keys.create("acme")
    admin_key = keys.create("ops", admin=True)
    assert tenant_key not in (tmp_path / "keys.json").read_text()  # only hashes are stored
    gw = start_gateway(gateway_settings(tmp_path, [fake_upstream.url]))
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.url, api_key="rlgw-wrong", max_retries=0).chat.completions.create(
                model="rlgw",
                messages=MSG,  # type: ignore[arg-type]
            )
        ok = openai.OpenAI(base_url=gw.url, api_key=tenant_key, max_retries=0)
        ok.chat.completions.create(model="rlgw", messages=MSG)  # type: ignore[arg-type]
        gw.services.recorder.flush(5)
        turn = parse_record(gw.bus.messages("turns")[0].value)
        assert turn.tenant == "acme"
        resp = httpx.get(gw.root + "/admin/episodes/x", headers={"Authorization": f"Bearer {tenant_key}"})
        assert resp.status_code == 403 and error_of(resp)["type"] == "permission_error"
        resp = httpx.get(gw.root + "/admin/episodes/x", headers={"Authorization": f"Bearer {admin_key}"})
        assert resp.status_code != 403
    finally:
        stop_gateway(gw)


def test_feedback_by_episode_and_by_turn(gateway: GatewayServer) -> None:
    c = openai.OpenAI(base_url=gateway.url, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="rlgw", messages=MSG)  # type: ignore[arg-type]
    episode = raw.headers["x-episode-id"]
    gateway.services.recorder.flush(5)
    turn_id = parse_record(gateway.bus.messages("turns")[0].value).id
    for body in (
        {"episode_id": episode, "name": "thumbs", "value": True},
        {"turn_id": turn_id, "name": "score", "value": 0.5},
        {"episode_id": episode, "name": "comment", "value": "too long", "done": True},
        {"episode_id": episode, "name": "demo", "value": [{"role": "assistant", "content": "better"}]},
    ):
        resp = httpx.post(gateway.url + "/feedback", json=body)
        assert resp.status_code == 200, resp.text
    gateway.services.recorder.flush(5)
    fbs: list[Any] = [parse_record(m.value) for m in gateway.bus.messages("feedback")]
    assert all(isinstance(f, Feedback) and f.episode_id == episode for f in fbs)
    assert [f.value for f in fbs] == [True, 0.5, "too long", [{"role": "assistant", "content": "better"}]]
    bad = httpx.post(gateway.url + "/feedback", json={"name": "x", "value": 1})
    assert bad.status_code == 400 and "episode_id" in error_of(bad)["message"]
    bad = httpx.post(gateway.url + "/feedback", json={"episode_id": "e", "name": "x", "value": {"a": 1}})
    assert bad.status_code == 400
    unknown = httpx.post(gateway.url + "/feedback", json={"turn_id": "nope", "name": "x", "value": 1})
    assert unknown.status_code == 404


def test_models_metrics_health(gateway: GatewayServer) -> None:
    models = openai.OpenAI(base_url=gateway.url, api_key="x").models.list()
    assert [m.id for m in models.data] == ["rlgw"]
    assert httpx.get(gateway.root + "/healthz").json() == {"status": "ok"}
    openai.OpenAI(base_url=gateway.url, api_key="x").chat.completions.create(model="rlgw", messages=MSG)  # type: ignore[arg-type]
    text = httpx.get(gateway.root + "/metrics").text
    assert 'rlgw_requests_total{status="200",stream="false",version="base"} 1.0' in text
    assert "rlgw_replica_healthy" in text


def test_episode_end_endpoint(gateway: GatewayServer) -> None:
    resp = httpx.post(gateway.url + "/episodes/ep-9/end")
    assert resp.status_code == 200
    gateway.services.recorder.flush(5)
    [rec] = [parse_record(m.value) for m in gateway.bus.messages("turns")]
    assert rec.kind == "episode_end" and rec.episode_id == "ep-9"  # type: ignore[attr-defined]
