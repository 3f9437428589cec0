"""Rendering a served chat completion as a Responses API response, whole or as its event stream.

Stream events, in order: response.created, response.in_progress, then per output item
output_item.added → (content_part.added, output_text.delta…, output_text.done, content_part.done |
function_call_arguments.delta…, function_call_arguments.done) → output_item.done, and last
response.completed (response.incomplete when the token limit cut it). Shapes: docs/front-doors.md.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.responses import Response

from gateway.conversations import Conversations, Stored, response_id
from gateway.doors import Door, StreamRender
from gateway.episodes import CallContext
from gateway.errors import APIError

DELTA_HEAD = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
)
ECHOED = ("instructions", "max_output_tokens", "previous_response_id", "temperature", "top_p", "user")


def assistant_message(content: str | None, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message as a chat client would send it back (what a continuation uses)."""
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg


def _usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    u = usage or {}
    prompt, completion = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _text_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [part]}


def _call_item(item_id: str, call: dict[str, Any], status: str) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.get("id") or item_id,
        "name": fn.get("name") or "",
        "arguments": fn.get("arguments") or "",
        "status": status,
    }


def output_items(turn_id: str, message: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    if message.get("content"):
        items.append(_text_item(f"msg_{turn_id}", str(message["content"]), "completed"))
    for i, call in enumerate(message.get("tool_calls") or []):
        items.append(_call_item(f"fc_{turn_id}_{i}", call, "completed"))
    return items


def response_object(
    rid: str, model: str, request: dict[str, Any], output: list[dict[str, Any]], **state: Any
) -> dict[str, Any]:
    meta = request.get("metadata")
    fmt = request.get("text") if isinstance(request.get("text"), dict) else {"format": {"type": "text"}}
    out = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "text": fmt,
        "store": request.get("store", True) is not False,
        "metadata": meta if isinstance(meta, dict) else {},
        "truncation": "disabled",
        "reasoning": None,
        "usage": None,
        **{k: request.get(k) for k in ECHOED},
    }
    out.update(state)
    return out


def render_stored(stored: Stored, model: str) -> dict[str, Any]:
    """A stored response, as `GET /v1/responses/{id}` returns it."""
    turn_id = stored.response_id.partition(".")[0].removeprefix("resp_")
    return response_object(stored.response_id, model, {}, output_items(turn_id, stored.reply))


class ResponsesDoor(Door):
    passthrough = False

    def __init__(
        self,
        request: dict[str, Any],
        chat_body: dict[str, Any],
        instructions: int,
        ctx: CallContext,
        conversations: Conversations,
        model: str,
    ) -> None:
        self.request, self.chat_body, self.instructions = request, chat_body, instructions
        self.ctx, self.conversations, self.model = ctx, conversations, model
        self.rid = response_id(ctx.turn_id, ctx.episode.episode_id)

    def finished(self, message: dict[str, Any], finish_reason: str | None, usage: Any) -> dict[str, Any]:
        """Keep the conversation (when stored) and return the finished response object."""
        stored = self.request.get("store", True) is not False
        self.conversations.remember(
            Stored(
                self.rid,
                self.ctx.tenant,
                self.ctx.episode.episode_id,
                self.chat_body["messages"],
                self.instructions,
                message,
                stored,
            )
        )
        cut = finish_reason == "length"
        return response_object(
            self.rid,
            self.model,
            self.request,
            output_items(self.ctx.turn_id, message),
            status="incomplete" if cut else "completed",
            incomplete_details={"reason": "max_output_tokens"} if cut else None,
            usage=_usage(usage),
        )

    def reply(self, data: dict[str, Any], headers: dict[str, str]) -> Response:
        choice = (data.get("choices") or [{}])[0]
        msg = choice.get("message") or {}
        message = assistant_message(msg.get("content"), msg.get("tool_calls") or [])
        body = self.finished(message, choice.get("finish_reason"), data.get("usage"))
        return Response(orjson.dumps(body), media_type="application/json", headers=headers)

    def stream(self) -> StreamRender:
        return ResponsesStream(self)


class ResponsesStream(StreamRender):
    def __init__(self, door: ResponsesDoor) -> None:
        self.door = door
        self.seq = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # finished items
        self.text: list[str] | None = None  # the open message item's text
        self.calls: dict[int, dict[str, Any]] = {}  # tool-call index -> chat tool call
        self.call_ids: dict[int, str] = {}  # tool-call index -> output item id
        self.open_call: int | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.delta_tail = b""  # the open message item's fields, as they end a delta event

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _text_delta(self, text: str) -> bytes:
        """A response.output_text.delta event, written without building its dict (one per chunk)."""
        self.seq += 1
        return DELTA_HEAD + str(self.seq - 1).encode() + self.delta_tail + orjson.dumps(text) + b"}\n\n"

    def _start(self) -> bytes:
        self.started = True
        shell = response_object(self.door.rid, self.door.model, self.door.request, [], status="in_progress")
        return self._event("response.created", response=shell) + self._event(
            "response.in_progress", response=shell
        )

    def _close(self) -> bytes:
        d = self.door
        n = len(self.output)
        if self.text is not None:
            text, self.text = "".join(self.text), None
            item = _text_item(f"msg_{d.ctx.turn_id}", text, "completed")
            part = item["content"][0]
            self.output.append(item)
            ids = {"item_id": item["id"], "output_index": n, "content_index": 0}
            return (
                self._event("response.output_text.done", **ids, text=text, logprobs=[])
                + self._event("response.content_part.done", **ids, part=part)
                + self._event("response.output_item.done", output_index=n, item=item)
            )
        if self.open_call is not None:
            index, self.open_call = self.open_call, None
            item = _call_item(self.call_ids[index], self.calls[index], "completed")
            self.output.append(item)
            args = item["arguments"]
            return self._event(
                "response.function_call_arguments.done", item_id=item["id"], output_index=n, arguments=args
            ) + self._event("response.output_item.done", output_index=n, item=item)
        return b""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start()
        d, n = self.door, len(self.output)
        for ch in chunk.get("choices") or []:
            if ch.get("index", 0) != 0:
                continue
            delta = ch.get("delta") or {}
            if delta.get("content"):
                if self.text is None:
                    out += self._close()
                    n = len(self.output)
                    item = _text_item(f"msg_{d.ctx.turn_id}", "", "in_progress")
                    part = item["content"][0]
                    item["content"] = []
                    self.text = []
                    ids = {"item_id": item["id"], "output_index": n, "content_index": 0}
                    out += self._event("response.output_item.added", output_index=n, item=item)
                    out += self._event("response.content_part.added", **ids, part=part)
                    self.delta_tail = b"," + orjson.dumps(ids | {"logprobs": []})[1:-1] + b',"delta":'
                self.text.append(delta["content"])
                out += self._text_delta(delta["content"])
            for tc in delta.get("tool_calls") or []:
                index = tc.get("index", 0)
                fn = tc.get("function") or {}
                if index not in self.calls:
                    out += self._close()
                    n = len(self.output)
                    call = {"id": tc.get("id"), "type": "function", "function": {"name": "", "arguments": ""}}
                    call["function"]["name"] = fn.get("name") or ""
                    self.calls[index], self.open_call = call, index
                    self.call_ids[index] = f"fc_{d.ctx.turn_id}_{len(self.calls) - 1}"
                    item = _call_item(self.call_ids[index], call, "in_progress")
                    out += self._event("response.output_item.added", output_index=n, item=item)
                elif fn.get("name"):
                    self.calls[index]["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    self.calls[index]["function"]["arguments"] += fn["arguments"]
                    out += self._event(
                        "response.function_call_arguments.delta",
                        item_id=self.call_ids[index],
                        output_index=n,
                        delta=fn["arguments"],
                    )
            if ch.get("finish_reason"):
                self.finish_reason = ch["finish_reason"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        return out

    def done(self) -> bytes:
        out = (b"" if self.started else self._start()) + self._close()
        text = "".join(
            part["text"] for item in self.output if item["type"] == "message" for part in item["content"]
        )
        calls = [self.calls[k] for k in sorted(self.calls)]
        final = self.door.finished(assistant_message(text or None, calls), self.finish_reason, self.usage)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, response=final)

    def fail(self, err: APIError) -> bytes:
        return self._event("error", code=err.code or err.type, message=err.message, param=err.param)
