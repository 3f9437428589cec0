"""The chat-completions service: check, route, forward, tap the reply, record the turn.

A replica that returns token ids and behaviour log-probs (vLLM's `return_token_ids` and
`logprobs`; the pool asks each replica, gateway/capabilities.py) is always asked for them;
what the client did not ask for is removed from the reply. A replica's 400 goes back to the
client that caused it and changes nothing for anyone else.
Streams are forwarded chunk by chunk as they arrive; the tap reads each chunk on the way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.responses import Response

from gateway.chat_request import KNOWN_FIELDS, ChatLimits, check_chat_request
from gateway.doors import CHAT, Door, StreamRender
from gateway.durability import NOT_DURABLE, made_durable, refuse_if_full
from gateway.episodes import CallContext
from gateway.errors import APIError, LedgerUnavailable, UpstreamError, UpstreamTimeout, from_upstream
from gateway.explore import Exploration
from gateway.metrics import Metrics
from gateway.pool import Pool, Replica
from gateway.routing import Route, Router
from gateway.sse import EventStream
from gateway.tap import StreamTap, Wants, choices_from_reply, strip_reply
from gateway.turns import Call, TurnWriter
from gateway.upstream import Response as UpstreamResponse
from gateway.upstream import UpstreamIOError

log = logging.getLogger(__name__)

GATEWAY_FIELDS = ("metadata",)  # consumed here, not forwarded


class ChatService:
    def __init__(
        self,
        pool: Pool,
        router: Router,
        writer: TurnWriter,
        metrics: Metrics,
        *,
        max_n: int,
        max_tokens: int,
        on_request: Callable[[str, bool, float], None] | None = None,
        explore: Exploration | None = None,
    ) -> None:
        self.pool, self.router, self.writer, self.metrics = pool, router, writer, metrics
        self.public_model = writer.public_model
        self.limits = ChatLimits(writer.public_model, max_n, max_tokens)
        self._on_request = on_request or (lambda version, ok, latency_ms: None)
        self.explore = explore
        self._logged_unknown: set[str] = set()

    # ---- request -----------------------------------------------------------------------
    def validate(self, body: Any) -> None:
        check_chat_request(body, self.limits)
        for key in body:
            if key not in KNOWN_FIELDS and key not in self._logged_unknown:
                self._logged_unknown.add(key)
                log.info("passing unknown request field %r through to the upstream", key)

    @staticmethod
    def wants(body: dict[str, Any]) -> Wants:
        """What the client itself asked for (the rest is trimmed from its reply)."""
        raw_opts = body.get("stream_options")
        opts: dict[str, Any] = raw_opts if isinstance(raw_opts, dict) else {}
        return Wants(
            logprobs=bool(body.get("logprobs")),
            token_ids=bool(body.get("return_token_ids")),
            usage=bool(opts.get("include_usage")),
        )

    def upstream_body(self, body: dict[str, Any], route: Route, tokens: bool, n: int = 1) -> bytes:
        stream = bool(body.get("stream"))
        raw_opts = body.get("stream_options")
        opts: dict[str, Any] = raw_opts if isinstance(raw_opts, dict) else {}
        up = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
        up["model"] = route.upstream_model
        if n > 1:
            up["n"] = n  # an exploration group
        if tokens:
            up["logprobs"] = True
            if not body.get("logprobs"):
                up["top_logprobs"] = 0
            up["return_token_ids"] = True
        if stream:
            up["stream_options"] = {**opts, "include_usage": True}
        return orjson.dumps(up)

    # ---- serving -----------------------------------------------------------------------
    async def complete(self, body: dict[str, Any], ctx: CallContext, door: Door = CHAT) -> Response:
        self.validate(body)
        refuse_if_full(self.writer.recorder)
        route = self.router.route(ctx.episode.episode_id, ctx.tenant)
        headers = {
            "X-Episode-Id": ctx.episode.episode_id,
            "X-Turn-Id": ctx.turn_id,
            "X-Model-Version": route.version,
        }
        started = time.time()
        t0 = time.perf_counter()
        if body.get("stream"):
            return await self._stream(body, ctx, route, headers, started, t0, door)
        k = self.explore.pick(body, ctx.episode.task) if self.explore is not None else 1
        wants = self.wants(body)
        try:
            async with self.pool.post(
                "/chat/completions", self._for_replica(body, route, k), only=route.replicas
            ) as (replica, resp):
                raw = await read_reply(resp)
        except (UpstreamError, UpstreamTimeout) as exc:
            self._failed(ctx, route, exc, False, t0)
            raise
        if resp.status != 200:
            return door.error(self._refused(ctx, route, resp.status, raw, False, t0, replica.url), headers)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            bad = UpstreamError(f"the replica's reply is not JSON: {exc}", code="upstream_error")
            self._failed(ctx, route, bad, False, t0, replica.url)
            raise bad from exc
        choices = choices_from_reply(data)
        prompt_ids = data.get("prompt_token_ids")
        group = Exploration.group_id() if k > 1 and len(choices) > 1 else None
        if group is not None:
            Exploration.answer_only_first(data)
        strip_reply(data, wants)
        data["model"] = self.public_model  # the client named the public model, not an adapter
        latency = time.perf_counter() - t0
        reply = door.reply(data, headers)  # built first: a reply that cannot be built is not recorded
        call = Call(body, ctx, route, replica, started, stream=False)
        self.writer.served(
            call, latency, choices[:1] if group else choices, data.get("usage"), prompt_ids, group_id=group
        )
        if group is not None:
            self.writer.alternatives(call, latency, choices[1:], prompt_ids, group)
        await made_durable(self.writer.recorder)
        self._observe(route.version, 200, False, latency)
        return reply

    async def _stream(
        self,
        body: dict[str, Any],
        ctx: CallContext,
        route: Route,
        headers: dict[str, str],
        started: float,
        t0: float,
        door: Door,
    ) -> Response:
        wants = self.wants(body)
        cm = self.pool.post("/chat/completions", self._for_replica(body, route), only=route.replicas)
        try:
            replica, resp = await cm.__aenter__()
        except (UpstreamError, UpstreamTimeout) as exc:
            self._failed(ctx, route, exc, True, t0)
            raise
        if resp.status != 200:
            try:
                raw = await read_reply(resp)
            finally:
                await cm.__aexit__(None, None, None)
            return door.error(self._refused(ctx, route, resp.status, raw, True, t0, replica.url), headers)

        tap, render = StreamTap(), door.stream()

        async def relay() -> AsyncIterator[bytes]:
            ttft: float | None = None
            error: str | None = None
            status = 200  # what the client got: 502 when the upstream broke, 499 when it left
            recorded = False
            buf = b""

            def record() -> None:  # once: at [DONE] (before the client sees it), or at the end
                nonlocal recorded
                if recorded:
                    return
                recorded = True
                latency = time.perf_counter() - t0
                call = Call(body, ctx, route, replica, started, stream=True)
                choices, usage, prompt_ids = tap.choices(), tap.usage, tap.prompt_token_ids
                self.writer.served(
                    call, latency, choices, usage, prompt_ids, ttft=ttft, error=error, status=status
                )
                self._observe(route.version, status, True, latency, ttft)

            try:
                async for piece in resp.iter_chunks():
                    buf += piece
                    while True:
                        cut = buf.find(b"\n\n")
                        if cut < 0:
                            break
                        event, buf = buf[:cut], buf[cut + 2 :]
                        out = self._relay_event(
                            event, tap, wants, self.public_model, render, door.passthrough
                        )
                        if event.startswith(b"data:") and event[5:].strip() == b"[DONE]":
                            record()  # before the client sees the end: durable acks wait here
                            if not await self.writer.recorder.durable():
                                yield render.fail(LedgerUnavailable(NOT_DURABLE, code="ledger_unavailable"))
                                return
                        if out is None:
                            continue
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        yield out
            except (UpstreamIOError, TimeoutError) as exc:
                error, status = f"upstream stream broke: {exc!r}", 502
                yield render.fail(
                    UpstreamError("the upstream stream ended early", code="upstream_stream_broken")
                )
            except BaseException as exc:  # client went away (cancelled / generator closed)
                error, status = f"client disconnected: {type(exc).__name__}", 499
                self.metrics.disconnects.labels("reply").inc()
                raise
            finally:
                await cm.__aexit__(None, None, None)
                record()

        return EventStream(relay(), headers)

    def _for_replica(self, body: dict[str, Any], route: Route, n: int = 1) -> Callable[[Replica], bytes]:
        """The upstream request for a replica: with token ids and log-probs unless it lacks them."""
        return lambda replica: self.upstream_body(body, route, replica.tokens is not False, n)

    @staticmethod
    def _relay_event(
        event: bytes, tap: StreamTap, wants: Wants, model: str, render: StreamRender, passthrough: bool
    ) -> bytes | None:
        if not event.startswith(b"data:"):
            return event + b"\n\n" if event.strip() and passthrough else None
        payload = event[5:].strip()
        if payload == b"[DONE]":
            return render.done()
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event + b"\n\n" if passthrough else None
        if not isinstance(chunk, dict) or not tap.feed(chunk, wants):
            return None
        if "model" in chunk:
            chunk["model"] = model
        return render.chunk(chunk)

    def _refused(
        self, ctx: CallContext, route: Route, status: int, raw: bytes, stream: bool, t0: float, up: str
    ) -> APIError:
        """The replica answered an error: a 5xx is a failed call, a 4xx the client's own."""
        err = from_upstream(status, raw)
        if status >= 500:
            self._failed(ctx, route, err, stream, t0, up)
        else:
            self._observe(route.version, status, stream, time.perf_counter() - t0)
        return err

    def _failed(
        self, ctx: CallContext, route: Route, err: APIError, stream: bool, t0: float, up: str = ""
    ) -> None:
        """A call that failed and left no turn: recorded on the turns topic, so every gateway
        counts it in the version's error rate (docs/versions.md)."""
        latency = time.perf_counter() - t0
        self.writer.failed(ctx, route.version, err.code or err.type, err.status, latency, up, stream)
        self._observe(route.version, err.status, stream, latency)

    def _observe(
        self, version: str, status: int, stream: bool, latency: float, ttft: float | None = None
    ) -> None:
        self.metrics.request(version, status, stream, latency, ttft)
        self._on_request(version, status < 500, latency * 1000.0)


async def read_reply(resp: UpstreamResponse) -> bytes:
    try:
        return await resp.read()
    except TimeoutError as exc:
        raise UpstreamTimeout("upstream did not answer in time", code="upstream_timeout") from exc
    except UpstreamIOError as exc:
        raise UpstreamError(f"upstream failed mid-reply: {exc}", code="upstream_error") from exc
