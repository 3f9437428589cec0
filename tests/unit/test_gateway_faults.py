"""Hostile input and faults at the gateway's door (issue #13, items 4–6): client ids, a pooled
connection found dead, clients that go away, what /readyz and /metrics reveal."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvloop

from gateway.auth import KeyStore
from gateway.pool import Pool
from gateway.upstream import ConnectFailed, Endpoint, _Conn
from ledger.records import Turn, parse_record
from tests.fixtures.upstream import FakeServer, GatewayServer, gateway_settings, start_gateway, stop_gateway
from tests.unit.test_gateway_upstream import RawServer, read_request, reply

MSG: Any = [{"role": "user", "content": "hi"}]


def chat(gw: GatewayServer, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        gw.url + "/chat/completions", json={"model": "rlgw", "messages": MSG, **body}, headers=headers
    )


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("user", "Zoë-ßtraße-ユーザー"),  # not Latin-1: could not be a header value
        ("user", "a\r\nSet-Cookie: x=1"),
        ("metadata.episode_id", "ep\x00nul"),
        ("metadata.episode_id", "ep\nline"),
        ("user", "x" * 201),
        ("metadata.episode_id", " padded "),
    ],
)
def test_an_id_that_cannot_be_sent_back_is_a_400_and_records_nothing(
    gateway: GatewayServer, where: str, value: str
) -> None:
    body: dict[str, Any] = {"user": value} if where == "user" else {"metadata": {"episode_id": value}}
    resp = chat(gateway, body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == where and err["code"] == "invalid_episode_id"
    gateway.services.recorder.flush(5)
    assert gateway.bus.messages("turns") == []  # no phantom turn


def test_ids_at_the_limit_are_kept_whole_and_never_merged(gateway: GatewayServer) -> None:
    a, b = "p" * 199 + "a", "p" * 199 + "b"  # 200 characters, one shared 199-character prefix
    for eid in (a, b):
        resp = chat(gateway, {"user": eid})
        assert resp.status_code == 200 and resp.headers["x-episode-id"] == eid
    gateway.services.recorder.flush(5)
    turns = [parse_record(m.value) for m in gateway.bus.messages("turns")]
    assert sorted(t.episode_id for t in turns if isinstance(t, Turn)) == [a, b]


class DiesAfterConnect(Endpoint):
    """A replica that dies between the connect and the request's write: the connection opens,
    then the replica's reset arrives (connection_lost delivered) before the write."""

    async def _connection(self) -> tuple[_Conn, bool]:
        conn, reused = await super()._connection()
        if not reused:
            assert conn.transport is not None
            conn.transport.abort()
            await asyncio.sleep(0)  # uvloop now refuses writes on the handle: RuntimeError
        return conn, reused


async def ok_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(reply(b"ok"))
        await writer.drain()


def test_a_connection_dead_on_write_fails_over_to_another_replica_never_a_500() -> None:
    async def main() -> None:
        dying, alive = RawServer(ok_handler), RawServer(ok_handler)
        async with dying, alive:
            doomed = DiesAfterConnect(f"http://127.0.0.1:{dying.port}/v1", connect_timeout_s=1.0)
            with pytest.raises(ConnectFailed):  # not RuntimeError: the pool may try elsewhere
                await doomed.request("POST", "/x", b"{}", timeout_s=5)
            pool = Pool([first_url(dying), first_url(alive)])
            pool.replicas[0].endpoint = doomed
            for _ in range(3):
                async with pool.post("/x", b"{}") as (replica, resp):
                    assert resp.status == 200 and await resp.read() == b"ok"
                    assert replica is pool.replicas[1]
            await pool.close()

    uvloop.run(main())


def first_url(server: RawServer) -> str:
    return f"http://127.0.0.1:{server.port}/v1"


def test_a_pooled_connection_closed_under_the_pool_is_retried_on_a_new_one() -> None:
    async def main() -> None:
        server = RawServer(ok_handler)
        async with server as endpoint:
            first = await endpoint.request("POST", "/x", b"{}", timeout_s=5)
            assert await first.read() == b"ok"
            [conn] = endpoint._idle
            assert conn.transport is not None
            conn.transport.abort()  # closing, still pooled, not yet marked closed
            again = await endpoint.request("POST", "/x", b"{}", timeout_s=5)
            assert again.status == 200 and await again.read() == b"ok"
            assert server.connections == 2

    uvloop.run(main())


def test_a_client_leaving_mid_body_is_counted_without_a_traceback(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(gateway.root.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"model"')
    text = ""
    for _ in range(100):
        text = httpx.get(gateway.root + "/metrics").text
        if 'rlgw_client_disconnects_total{during="request"} 1.0' in text:
            break
        asyncio.run(asyncio.sleep(0.02))
    assert 'rlgw_client_disconnects_total{during="request"} 1.0' in text
    assert 'rlgw_errors_total{type="server_error"}' not in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_readyz_and_metrics_name_no_upstream_without_an_admin_key(
    tmp_path: Path, fake_upstream: FakeServer
) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    tenant, admin = keys.create("acme"), keys.create("ops", admin=True)
    gw = start_gateway(gateway_settings(tmp_path, [fake_upstream.url]))
    try:
        address = f"127.0.0.1:{fake_upstream.port}"
        for key in (None, tenant):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            ready = httpx.get(gw.root + "/readyz", headers=headers)
            assert ready.status_code == 200 and address not in ready.text
            assert ready.json()["replicas"] == [{"replica": 0, "healthy": True, "tokens": True}]
        shown = httpx.get(gw.root + "/readyz", headers={"Authorization": f"Bearer {admin}"}).json()
        assert shown["replicas"][0]["url"] == fake_upstream.url
        metrics = httpx.get(gw.root + "/metrics").text
        assert address not in metrics and 'rlgw_replica_healthy{replica="0"} 1.0' in metrics
    finally:
        stop_gateway(gw)
    exposed = start_gateway(gateway_settings(tmp_path, [fake_upstream.url], expose_upstreams=True))
    try:
        assert fake_upstream.url in httpx.get(exposed.root + "/metrics").text
    finally:
        stop_gateway(exposed)


def test_a_stream_the_client_leaves_is_recorded_with_its_status(tmp_path: Path) -> None:
    from gateway.fake_upstream import FakeState
    from tests.fixtures.upstream import start_fake

    slow = start_fake(FakeState(delay_s=0.05))
    gw = start_gateway(gateway_settings(tmp_path, [slow.url]))
    try:
        body = {
            "model": "rlgw",
            "messages": [{"role": "user", "content": "a long answer " * 5}],
            "stream": True,
        }
        with httpx.stream("POST", gw.url + "/chat/completions", content=orjson.dumps(body)) as resp:
            next(resp.iter_raw())  # the first chunk, then hang up
        for _ in range(200):
            gw.services.recorder.flush(5)
            turns = [parse_record(m.value) for m in gw.bus.messages("turns")]
            if turns:
                break
            asyncio.run(asyncio.sleep(0.02))
        [turn] = turns
        assert isinstance(turn, Turn) and turn.status == 499 and turn.error and "disconnected" in turn.error
        assert 'rlgw_client_disconnects_total{during="reply"} 1.0' in httpx.get(gw.root + "/metrics").text
    finally:
        stop_gateway(gw)
        slow.stop.set()
