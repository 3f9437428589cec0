"""Rendering a served chat completion as an Anthropic message, whole or as its event stream,
and the gateway's errors in Anthropic's shape.

Stream events, in order: message_start, then per content block content_block_start →
content_block_delta (text_delta | input_json_delta)… → content_block_stop, then message_delta
(stop reason, usage) and message_stop. Shapes: docs/front-doors.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response

from gateway.doors import Door, StreamRender
from gateway.episodes import CallContext
from gateway.errors import APIError, error_response

TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":',
    b',"delta":{"type":"text_delta","text":',
)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_body(err: APIError) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(err.status, "api_error"), "message": err.message},
    }


def anthropic_error(err: APIError, headers: dict[str, str] | None = None) -> Response:
    return error_response(err.status, error_body(err), headers)


def stop_reason(finish_reason: str | None, has_calls: bool, matched: Any) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a chat finish reason (vLLM names the matched stop string)."""
    if has_calls or finish_reason == "tool_calls":
        return "tool_use", None
    if finish_reason == "length":
        return "max_tokens", None
    if isinstance(matched, str):
        return "stop_sequence", matched
    return "end_turn", None


def tool_input(arguments: str) -> Any:
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    u = usage or {}
    return {
        "input_tokens": int(u.get("prompt_tokens") or 0),
        "output_tokens": int(u.get("completion_tokens") or 0),
    }


class MessagesDoor(Door):
    passthrough = False

    def __init__(
        self, request: dict[str, Any], ctx: CallContext, keep_args: Callable[[str, str], None], model: str
    ) -> None:
        self.request, self.ctx, self.keep_args, self.model = request, ctx, keep_args, model
        self.id = f"msg_{ctx.turn_id}"

    def message(self, content: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        out = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content}
        return out | {"stop_reason": None, "stop_sequence": None} | fields

    def reply(self, data: dict[str, Any], headers: dict[str, str]) -> Response:
        choice = (data.get("choices") or [{}])[0]
        msg = choice.get("message") or {}
        blocks: list[dict[str, Any]] = []
        if msg.get("content"):
            blocks.append({"type": "text", "text": msg["content"]})
        calls = msg.get("tool_calls") or []
        for call in calls:
            fn = call.get("function") or {}
            self.keep_args(call.get("id") or "", fn.get("arguments") or "")
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": fn.get("name"),
                    "input": tool_input(fn.get("arguments") or ""),
                }
            )
        reason, seq = stop_reason(choice.get("finish_reason"), bool(calls), choice.get("stop_reason"))
        body = self.message(blocks, stop_reason=reason, stop_sequence=seq, usage=_usage(data.get("usage")))
        return Response(orjson.dumps(body), media_type="application/json", headers=headers)

    def error(self, err: APIError, headers: dict[str, str] | None = None) -> Response:
        return anthropic_error(err, headers)

    def stream(self) -> StreamRender:
        return MessagesStream(self)


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class MessagesStream(StreamRender):
    def __init__(self, door: MessagesDoor) -> None:
        self.door = door
        self.started = False
        self.blocks = 0  # content blocks opened so far
        self.open: str | int | None = None  # "text", a tool-call index, or nothing open
        self.calls: dict[int, dict[str, str]] = {}  # tool-call index -> id, arguments
        self.finish_reason: str | None = None
        self.matched: Any = None
        self.usage: dict[str, Any] | None = None

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        if isinstance(self.open, int):
            call = self.calls[self.open]
            self.door.keep_args(call["id"], call["arguments"])
        self.open = None
        return _event("content_block_stop", {"index": self.blocks - 1})

    def _start(self, block: dict[str, Any], key: str | int) -> bytes:
        out = self._close() + _event("content_block_start", {"index": self.blocks, "content_block": block})
        self.blocks += 1
        self.open = key
        return out

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b""
        if not self.started:
            self.started = True
            usage = {"input_tokens": 0, "output_tokens": 0}
            out += _event("message_start", {"message": self.door.message([], usage=usage)})
        for ch in chunk.get("choices") or []:
            if ch.get("index", 0) != 0:
                continue
            delta = ch.get("delta") or {}
            if delta.get("content"):
                if self.open != "text":
                    out += self._start({"type": "text", "text": ""}, "text")
                index = str(self.blocks - 1).encode()  # a text delta is written without building its dict
                out += TEXT_DELTA[0] + index + TEXT_DELTA[1] + orjson.dumps(delta["content"]) + b"}}\n\n"
            for tc in delta.get("tool_calls") or []:
                index = tc.get("index", 0)
                fn = tc.get("function") or {}
                if index not in self.calls:
                    self.calls[index] = {"id": tc.get("id") or "", "arguments": ""}
                    block = {
                        "type": "tool_use",
                        "id": tc.get("id"),
                        "name": fn.get("name") or "",
                        "input": {},
                    }
                    out += self._start(block, index)
                if fn.get("arguments"):
                    self.calls[index]["arguments"] += fn["arguments"]
                    part = {"type": "input_json_delta", "partial_json": fn["arguments"]}
                    out += _event("content_block_delta", {"index": self.blocks - 1, "delta": part})
            if ch.get("finish_reason"):
                self.finish_reason, self.matched = ch["finish_reason"], ch.get("stop_reason")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        return out

    def done(self) -> bytes:
        empty = {"input_tokens": 0, "output_tokens": 0}
        out = (
            b"" if self.started else _event("message_start", {"message": self.door.message([], usage=empty)})
        )
        out += self._close()
        reason, seq = stop_reason(self.finish_reason, bool(self.calls), self.matched)
        delta = {"delta": {"stop_reason": reason, "stop_sequence": seq}, "usage": _usage(self.usage)}
        return out + _event("message_delta", delta) + _event("message_stop", {})

    def fail(self, err: APIError) -> bytes:
        return _event("error", {"error": error_body(err)["error"]})
