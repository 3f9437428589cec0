"""`POST /v1/messages`: Anthropic's Messages API, translated into one chat-completions call.

`system` → a system message; content blocks → chat messages (text, images, `tool_use` → the
assistant's tool calls, `tool_result` → tool messages); tools and `tool_choice` → chat's. The body
is served and recorded by `ChatService` like any chat call and rendered back by `MessagesDoor`
(gateway/messages_render.py); errors on this route are in Anthropic's shape. A `tool_use` the
gateway served comes back with the exact arguments text the model wrote (`ToolArguments`), so the
next prompt's tokens extend the served ones. Shapes: docs/front-doors.md.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.auth import Principal
from gateway.chat import ChatService
from gateway.conversations import DOOR_KEY
from gateway.episodes import CallContext, resolve_episode
from gateway.errors import APIError, InvalidRequest
from gateway.messages_render import MessagesDoor, anthropic_error

PASSED_ON = ("temperature", "top_p", "top_k", "stream")
CHOICES = {"auto": "auto", "any": "required", "none": "none"}


class ToolArguments:
    """Tool-call id -> the arguments text the model wrote (bounded), for `tool_use` blocks sent back."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._map: OrderedDict[str, str] = OrderedDict()
        self._capacity = capacity

    def add(self, call_id: str, arguments: str) -> None:
        self._map[call_id] = arguments
        if len(self._map) > self._capacity:
            self._map.popitem(last=False)

    def text(self, call_id: str, value: Any) -> str:
        served = self._map.get(call_id)
        if served is not None:
            try:
                if json.loads(served) == value:
                    return served
            except ValueError:
                pass
        return json.dumps(value, ensure_ascii=False)


def _text(blocks: Any, where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise InvalidRequest(f"{where} must be a string or an array of text blocks")
    out = []
    for b in blocks:
        if not (isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)):
            raise InvalidRequest(f"{where} may hold text blocks only here")
        out.append(b["text"])
    return "".join(out)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = block.get("source")
    src = src if isinstance(src, dict) else {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type')};base64,{src.get('data')}"
    elif src.get("type") == "url":
        url = str(src.get("url"))
    else:
        raise InvalidRequest(f"{where}: an image needs a base64 or url source")
    return {"type": "image_url", "image_url": {"url": url}}


def _content(parts: list[Any]) -> Any:
    """Chat content: one string when it is all text (as a chat client sends it), else parts."""
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def chat_messages(messages: Any, args: ToolArguments) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty array")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"{where}: each message needs role 'user' or 'assistant'")
        role, content = m["role"], m.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise InvalidRequest(f"{where}.content: must be a string or an array of blocks")
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for j, b in enumerate(content):
            kind = b.get("type") if isinstance(b, dict) else None
            at = f"{where}.content.{j}"
            if kind == "text":
                parts.append({"type": "text", "text": str(b.get("text", ""))})
            elif kind == "image":
                parts.append(_image(b, at))
            elif kind == "tool_use" and role == "assistant":
                if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str):
                    raise InvalidRequest(f"{at}: tool_use needs 'id' and 'name'")
                fn = {"name": b["name"], "arguments": args.text(b["id"], b.get("input", {}))}
                calls.append({"id": b["id"], "type": "function", "function": fn})
            elif kind == "tool_result" and role == "user":
                if not isinstance(b.get("tool_use_id"), str):
                    raise InvalidRequest(f"{at}: tool_result needs 'tool_use_id'")
                result = b.get("content", "")
                text = (
                    _text(result, at)
                    if not isinstance(result, list)
                    else _text([r for r in result if isinstance(r, dict) and r.get("type") == "text"], at)
                )
                out.append({"role": "tool", "tool_call_id": b["tool_use_id"], "content": text})
            elif kind not in ("thinking", "redacted_thinking"):
                raise InvalidRequest(f"{at}: blocks of type '{kind}' are not supported in a {role} message")
        if calls:
            out.append(
                {"role": "assistant", "content": _content(parts) if parts else None, "tool_calls": calls}
            )
        elif parts or role == "assistant":
            out.append({"role": role, "content": _content(parts)})
    return out


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequest("tools: must be an array")
    out = []
    for i, t in enumerate(tools):
        if (
            not isinstance(t, dict)
            or t.get("type", "custom") != "custom"
            or not isinstance(t.get("name"), str)
        ):
            raise InvalidRequest(f"tools.{i}: only custom tools (name, input_schema) are served")
        fn: dict[str, Any] = {"name": t["name"], "parameters": t.get("input_schema") or {"type": "object"}}
        if t.get("description"):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def to_chat(body: dict[str, Any], args: ToolArguments) -> dict[str, Any]:
    messages = chat_messages(body.get("messages"), args)
    system = body.get("system")
    if system:
        messages.insert(0, {"role": "system", "content": _text(system, "system")})
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequest("max_tokens: Field required")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "max_tokens": max_tokens}
    for name in PASSED_ON:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stream") is True:
        chat["stream_options"] = {"include_usage": True}
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        chat["tools"] = chat_tools(body["tools"])
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind in CHOICES:
            chat["tool_choice"] = CHOICES[kind]
        elif kind == "tool" and isinstance(choice.get("name"), str):
            chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        else:
            raise InvalidRequest("tool_choice: must be auto, any, none or a tool")
        if choice.get("disable_parallel_tool_use"):
            chat["parallel_tool_calls"] = False
    meta = body.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("user_id"), str):
        chat["user"] = meta["user_id"]
    chat["metadata"] = {DOOR_KEY: {"api": "messages"}}
    return chat


def messages_router(
    chat: ChatService,
    auth: Callable[[Request], Principal],
    read_body: Callable[[Request], Awaitable[Any]],
) -> APIRouter:
    router = APIRouter()
    args = ToolArguments()

    @router.post("/v1/messages")
    async def create_message(request: Request) -> Response:
        try:
            principal = auth(request)
            body = await read_body(request)
            if not isinstance(body, dict):
                raise InvalidRequest("the request body must be a JSON object")
            chat_body = to_chat(body, args)
            ctx = CallContext(principal.tenant, resolve_episode(request.headers, chat_body, principal))
            return await chat.complete(chat_body, ctx, MessagesDoor(body, ctx, args.add, chat.public_model))
        except APIError as exc:
            chat.metrics.errors.labels(exc.type).inc()
            return anthropic_error(exc)

    return router
