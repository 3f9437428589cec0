"""The replica client against real servers: keep-alive reuse, streaming, every way a reply ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from gateway.upstream import MAX_BUFFERED, ConnectFailed, Endpoint, UpstreamBroken
from rlgw.stack import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


class RawServer:
    """A TCP server speaking hand-written HTTP, so that each way a reply can end is exact."""

    def __init__(self, handler: Handler) -> None:
        self.handler, self.connections = handler, 0
        self.port = free_port()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Endpoint:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return Endpoint(f"http://127.0.0.1:{self.port}/v1", connect_timeout_s=1.0)

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def reply(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_keep_alive_connection_is_reused_for_sequential_requests() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(reply(b'{"ok": %d}' % len(seen)))

    server = RawServer(handler)
    async with server as ep:
        bodies = []
        for i in range(5):
            resp = await ep.request("POST", "/chat/completions", b'{"i": %d}' % i, timeout_s=5)
            assert resp.status == 200
            bodies.append(await resp.read())
        await ep.close()
    assert bodies == [b'{"ok": %d}' % i for i in range(1, 6)]
    assert server.connections == 1
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Content-Length: 8\r\n" in seen[0] and seen[0].endswith(b'{"i": 0}')


async def test_a_stale_idle_connection_is_retried_on_a_new_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply(b"first"))  # keep-alive promised, but the server hangs up
        await writer.drain()

    server = RawServer(handler)
    async with server as ep:
        assert await (await ep.request("GET", "/models", timeout_s=5)).read() == b"first"
        await asyncio.sleep(0.05)  # the idle connection is closed by now
        assert await (await ep.request("GET", "/models", timeout_s=5)).read() == b"first"
    assert server.connections == 2


async def test_connection_close_and_end_of_stream_delimited_replies() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")

    server = RawServer(handler)
    async with server as ep:
        for _ in range(2):
            resp = await ep.request("GET", "/models", timeout_s=5)
            assert await resp.read() == b"until the end"
    assert server.connections == 2  # never reused


async def test_refused_connection_raises_connect_failed() -> None:
    ep = Endpoint(f"http://127.0.0.1:{free_port()}/v1", connect_timeout_s=1.0)
    with pytest.raises(ConnectFailed):
        await ep.request("POST", "/chat/completions", b"{}", timeout_s=5)


async def test_a_reply_cut_off_mid_body_is_broken_not_short() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    async with RawServer(handler) as ep:
        resp = await ep.request("GET", "/models", timeout_s=5)
        with pytest.raises(UpstreamBroken):
            await resp.read()


async def test_a_silent_replica_times_out_and_its_connection_is_dropped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    server = RawServer(handler)
    async with server as ep:
        with pytest.raises(TimeoutError):
            await ep.request("GET", "/models", timeout_s=0.2)
        assert ep._idle == []


@asynccontextmanager
async def streaming_server() -> AsyncIterator[tuple[Endpoint, asyncio.Event]]:
    go_on = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await go_on.wait()  # the rest only once the client has seen the first piece
        for i in range(3):
            await resp.write(b"data: %d\n\n" % i)
        await resp.write(b"x" * (3 * MAX_BUFFERED))  # more than the client buffers unread
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Endpoint(f"http://127.0.0.1:{port}/v1"), go_on
    finally:
        await runner.cleanup()


async def test_streamed_pieces_arrive_as_sent_and_large_ones_are_paced() -> None:
    async with streaming_server() as (ep, go_on):
        await check_stream(ep, go_on)


async def check_stream(ep: Endpoint, go_on: asyncio.Event) -> None:
    resp = await ep.request("POST", "/chat/completions", b"{}", timeout_s=10)
    assert resp.headers.get(b"transfer-encoding") == b"chunked"
    pieces = resp.iter_chunks()
    assert await pieces.__anext__() == b"data: first\n\n"  # before the server sent the rest
    go_on.set()
    await asyncio.sleep(0.2)  # let the server run ahead of the reader
    rest = b"".join([p async for p in pieces])
    assert rest.startswith(b"data: 0\n\ndata: 1\n\ndata: 2\n\n")
    assert len(rest) == 3 * len(b"data: 0\n\n") + 3 * MAX_BUFFERED
    resp.release()
    assert len(ep._idle) == 1  # read to the end: the connection is kept


async def test_concurrent_requests_each_get_their_own_reply() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            body = request.split(b"\r\n\r\n", 1)[1]
            await asyncio.sleep(0.001 * (body[-1] % 5))  # replies finish out of order
            writer.write(reply(body))

    async def one(ep: Endpoint, i: int) -> bytes:
        resp = await ep.request("POST", "/chat/completions", b"request %d" % i, timeout_s=5)
        body = await resp.read()
        resp.release()  # as the pool does after reading: must not pool the connection twice
        return body

    server = RawServer(echo)
    async with server as ep:
        for _ in range(3):
            got = await asyncio.wait_for(asyncio.gather(*(one(ep, i) for i in range(16))), 10)
            assert got == [b"request %d" % i for i in range(16)]
    assert server.connections == 16
