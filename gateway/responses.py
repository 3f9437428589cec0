"""`POST /v1/responses`: OpenAI's Responses API, translated into one chat-completions call.

The request becomes a chat body (instructions → a system message, input items → messages, function
tools → chat tools) and is served and recorded by `ChatService` like any chat call; the reply is
rendered back by `ResponsesDoor` (gateway/responses_render.py). `previous_response_id` continues
a stored response: its messages and its reply come first, in its episode (gateway/conversations.py).
Shapes: docs/front-doors.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.auth import Principal
from gateway.chat import ChatService
from gateway.conversations import DOOR_KEY, Conversations, Stored
from gateway.episodes import CallContext, EpisodeRef, resolve_episode
from gateway.errors import InvalidRequest, NotFound
from gateway.responses_render import ResponsesDoor, render_stored

PASSED_ON = ("temperature", "top_p", "parallel_tool_calls", "user", "seed", "stop", "top_k")
REFUSED = ("background", "conversation", "prompt")  # state the gateway does not keep
TEXT_PARTS = ("input_text", "output_text", "text")


def _text_of(parts: Any, where: str) -> str:
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise InvalidRequest(f"'{where}' must be a string or an array of parts", param=where)
    texts = []
    for p in parts:
        if isinstance(p, dict) and p.get("type") in TEXT_PARTS and isinstance(p.get("text"), str):
            texts.append(p["text"])
        elif isinstance(p, dict) and p.get("type") == "refusal":
            texts.append(str(p.get("refusal") or ""))
        else:
            raise InvalidRequest(f"'{where}' may hold text parts only here", param=where)
    return "".join(texts)


def _content(content: Any, where: str) -> Any:
    """A message's content as chat content: a string, or parts when there are images."""
    if isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") == "input_image" for p in content
    ):
        out = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "input_image":
                out.append({"type": "image_url", "image_url": {"url": p.get("image_url")}})
            else:
                out.append({"type": "text", "text": _text_of([p], where)})
        return out
    return _text_of(content, where)


def input_messages(items: Any) -> list[dict[str, Any]]:
    """`input` (a string or items) as chat messages; function calls join the assistant message
    before them, as a chat client would have sent it back."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise InvalidRequest("'input' must be a string or an array of items", param="input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input.{i}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(
                    f"{where}.role must be user, assistant, system or developer", param=where
                )
            out.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _content(item.get("content"), where),
                }
            )
        elif kind == "function_call":
            call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
            if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(args, str)):
                raise InvalidRequest(f"{where} needs 'call_id', 'name' and 'arguments' strings", param=where)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if last["content"] == "":
                    last["content"] = None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise InvalidRequest(f"{where}.call_id must be a string", param=where)
            out.append(
                {"role": "tool", "tool_call_id": call_id, "content": _text_of(item.get("output"), where)}
            )
        elif kind != "reasoning":  # a reasoning item carries nothing this model sees again
            raise InvalidRequest(f"input items of type '{kind}' are not supported", param=where)
    return out


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("name"), str):
            raise InvalidRequest(
                f"tools.{i}: only function tools (with a 'name') are served", param=f"tools.{i}"
            )
        fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out


def chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest("'tool_choice' must be auto, none, required or a function", param="tool_choice")


def to_chat(body: dict[str, Any], previous: Stored | None) -> tuple[dict[str, Any], int]:
    """The chat body for a Responses request, and how many of its messages are instructions."""
    for name in REFUSED:
        if body.get(name):
            raise InvalidRequest(f"'{name}' is not supported by this gateway", param=name)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": _text_of(instructions, "instructions")})
    if previous is not None:
        messages += [*previous.messages[previous.instructions :], previous.reply]
    if "input" not in body:
        raise InvalidRequest("'input' is required", param="input")
    messages += input_messages(body["input"])
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for name in PASSED_ON:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = chat_tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = chat_tool_choice(body["tool_choice"])
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    if body.get("stream") is not None:
        chat["stream"] = body["stream"]
        if body["stream"] is True:
            chat["stream_options"] = {"include_usage": True}
    meta = body.get("metadata")
    n_instructions = 1 if instructions is not None else 0
    door: dict[str, Any] = {"api": "responses", "instructions": n_instructions}
    door["store"] = body.get("store", True) is not False
    if previous is not None:
        door["previous_response_id"] = previous.response_id
    chat["metadata"] = {**(meta if isinstance(meta, dict) else {}), DOOR_KEY: door}
    return chat, n_instructions


def responses_router(
    chat: ChatService,
    conversations: Conversations,
    auth: Callable[[Request], Principal],
    read_body: Callable[[Request], Awaitable[Any]],
) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        principal = auth(request)
        body = await read_body(request)
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        previous = None
        prev_id = body.get("previous_response_id")
        if prev_id is not None:
            previous = await conversations.get(str(prev_id), principal.tenant)
            if previous is None:
                raise NotFound(f"response {prev_id} not found", param="previous_response_id")
        chat_body, instructions = to_chat(body, previous)
        ref = resolve_episode(request.headers, chat_body, principal)
        if previous is not None and ref.generated:  # a continuation stays in its episode
            ref = EpisodeRef(previous.episode_id, False, ref.end, ref.task)
        ctx = CallContext(principal.tenant, ref)
        door = ResponsesDoor(body, chat_body, instructions, ctx, conversations, chat.public_model)
        return await chat.complete(chat_body, ctx, door)

    @router.get("/v1/responses/{response_id}")
    async def get_response(response_id: str, request: Request) -> dict[str, Any]:
        principal = auth(request)
        stored = await conversations.get(response_id, principal.tenant)
        if stored is None:
            raise NotFound(f"response {response_id} not found", param="response_id")
        return render_stored(stored, chat.public_model)

    return router
