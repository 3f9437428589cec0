"""An OpenAI-compatible fake of a vLLM replica, for tests and benchmarks (the pool's fake).

It speaks the same wire format as vLLM's chat endpoint, including vLLM's extra fields
(`return_token_ids` → `prompt_token_ids` and per-choice `token_ids`), logprobs, `n`, tools,
streaming with `stream_options.include_usage`, and runtime LoRA load/unload. Tokens are the
UTF-8 bytes of the text (id = byte + 1), so token ids decode back to the text exactly.

    python -m gateway.fake_upstream --port 8001 [--no-token-ids] [--refuse-extensions] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

BASE_MODEL = "fake-base"


def encode(text: str) -> list[int]:
    return [b + 1 for b in text.encode()]


def decode(ids: list[int]) -> str:
    return bytes(i - 1 for i in ids).decode(errors="replace")


@dataclass
class FakeState:
    token_ids: bool = True  # False: behave like a server without vLLM's extensions
    refuse_extensions: bool = False  # True: answer vLLM's extra fields with 400 (a strict server)
    max_logprobs: int = 20  # vLLM's default limit on top_logprobs (more is a 400)
    delay_s: float = 0.0  # before the reply (non-streaming) / between chunks (streaming)
    fail_next: int = 0  # answer this many requests with 500
    models_delay_s: float = 0.0  # between taking the /v1/models listing and sending it
    unload_delay_s: float = 0.0  # before an unload takes effect
    adapters: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    keep_requests: bool = True
    base_model: str = BASE_MODEL  # the served name (vLLM's --served-model-name)
    weights: str = ""  # the full-weights folder it serves: answers say `@<weights>` when set
    reloads: int = 0  # in-place reloads through /collective_rpc


def _answer(body: dict[str, Any], model: str, i: int) -> str:
    messages = body.get("messages") or []
    last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last.get("content")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    text = f"echo[{model}#{i}]: {content or ''}"
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        text = orjson.dumps({"answer": content or ""}).decode()
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        text = decode(encode(text)[: int(limit)])
    return text


def _logprob(token: int, pos: int) -> float:
    return -round(0.05 + (token * 7 + pos * 13) % 97 / 100.0, 4)


def _logprobs(ids: list[int], top: int) -> dict[str, Any]:
    content = []
    for pos, t in enumerate(ids):
        lp = _logprob(t, pos)
        tok = decode([t])
        entry = {"token": tok, "logprob": lp, "bytes": [t - 1]}
        entry["top_logprobs"] = [{"token": tok, "logprob": lp, "bytes": [t - 1]}][:top] if top else []
        content.append(entry)
    return {"content": content}


def _tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    messages = body.get("messages") or [{}]
    if not tools or body.get("tool_choice") == "none" or messages[-1].get("role") == "tool":
        return None  # a tool's result gets a text answer, so a tool loop ends
    fn = tools[0].get("function", {})
    return {
        "id": "call_fake_0",
        "type": "function",
        "function": {"name": fn.get("name", "tool"), "arguments": '{"q": "x"}'},
    }


def make_app(state: FakeState | None = None) -> web.Application:
    state = state or FakeState()
    app = web.Application(client_max_size=64 * 1024 * 1024)

    def known(model: str) -> bool:
        return model == state.base_model or model in state.adapters

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if state.keep_requests:
            state.requests.append(body)
        if state.fail_next > 0:
            state.fail_next -= 1
            return web.json_response(
                {"error": {"message": "injected failure", "type": "server_error"}}, status=500
            )
        if state.refuse_extensions and "return_token_ids" in body:
            refused = "Unrecognized request argument supplied: return_token_ids"
            return web.json_response(
                {"error": {"message": refused, "type": "invalid_request_error"}}, status=400
            )
        if int(body.get("top_logprobs") or 0) > state.max_logprobs:
            top, most = body["top_logprobs"], state.max_logprobs
            too_many = f"Requested sample logprobs of {top}, which is greater than max allowed: {most}"
            return web.json_response(
                {"error": {"message": too_many, "type": "BadRequestError", "code": 400}}, status=400
            )
        model = body.get("model", "")
        if not known(model):
            err = {"message": f"The model `{model}` does not exist.", "type": "NotFoundError", "code": 404}
            return web.json_response({"error": err}, status=404)
        n = int(body.get("n") or 1)
        want_ids = bool(body.get("return_token_ids")) and state.token_ids
        want_lp = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0)
        prompt_ids = encode(orjson.dumps(body.get("messages", [])).decode())
        weights = state.weights  # a reload before the reply is sent shows as `@old->new`
        tag = f"@{weights} " if weights else ""  # answers name the full weights that made them
        texts = [tag + _answer(body, model, i) for i in range(n)]
        call = _tool_call(body)
        created = int(time.time())
        usage = {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": sum(len(encode(t)) for t in texts),
            "total_tokens": len(prompt_ids) + sum(len(encode(t)) for t in texts),
        }
        if not body.get("stream"):
            if state.delay_s:
                await asyncio.sleep(state.delay_s)
            if state.weights != weights:
                texts = [f"@{weights}->{state.weights} {_answer(body, model, i)}" for i in range(n)]
            choices = []
            for i, text in enumerate(texts):
                ids = encode(text)
                msg: dict[str, Any] = {"role": "assistant", "content": None if call else text}
                if call:
                    msg["tool_calls"] = [call]
                choice: dict[str, Any] = {
                    "index": i,
                    "message": msg,
                    "logprobs": _logprobs(ids, top) if want_lp else None,
                    "finish_reason": "tool_calls" if call else "stop",
                }
                if want_ids:
                    choice["token_ids"] = ids
                choices.append(choice)
            out: dict[str, Any] = {
                "id": f"chatcmpl-fake{created}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": choices,
                "usage": usage,
            }
            if want_ids:
                out["prompt_token_ids"] = prompt_ids
            return web.Response(body=orjson.dumps(out), content_type="application/json")

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def send(chunk: dict[str, Any]) -> None:
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

        base = {
            "id": f"chatcmpl-fake{created}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        for i in range(n):
            first: dict[str, Any] = {
                **base,
                "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}}],
            }
            if want_ids and i == 0:
                first["prompt_token_ids"] = prompt_ids
            await send(first)
        for i, text in enumerate(texts):
            ids = encode(text)
            if call is not None:  # a tool call, its arguments split over several deltas
                fn = call["function"]
                head = {"index": 0, "id": call["id"], "type": "function", "function": {"name": fn["name"]}}
                await send({**base, "choices": [{"index": i, "delta": {"tool_calls": [head]}}]})
                args = fn["arguments"]
                for k in range(0, len(args), 5):
                    part = {"index": 0, "function": {"arguments": args[k : k + 5]}}
                    delta: dict[str, Any] = {"index": i, "delta": {"tool_calls": [part]}}
                    if want_ids and k == 0:
                        delta["token_ids"], delta["logprobs"] = ids, _logprobs(ids, top) if want_lp else None
                    await send({**base, "choices": [delta]})
                await send({**base, "choices": [{"index": i, "delta": {}, "finish_reason": "tool_calls"}]})
                continue
            pieces = [ids[k : k + 4] for k in range(0, len(ids), 4)] or [[]]
            for piece in pieces:
                if state.delay_s:
                    await asyncio.sleep(state.delay_s)
                ch: dict[str, Any] = {"index": i, "delta": {"content": decode(piece)}}
                if want_lp:
                    ch["logprobs"] = _logprobs(piece, top)
                if want_ids:
                    ch["token_ids"] = piece
                await send({**base, "choices": [ch]})
            await send({**base, "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]})
        if include_usage:
            await send({**base, "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def models(_: web.Request) -> web.Response:
        names = [state.base_model, *state.adapters]
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in names]
        if state.models_delay_s:
            await asyncio.sleep(state.models_delay_s)
        return web.json_response({"object": "list", "data": data})

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def load_lora(request: web.Request) -> web.Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return web.json_response({"error": {"message": "lora_name and lora_path required"}}, status=400)
        if name in state.adapters and not body.get("load_inplace"):
            return web.json_response({"error": {"message": f"adapter {name} already loaded"}}, status=400)
        state.adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora(request: web.Request) -> web.Response:
        body = await request.json()
        if state.unload_delay_s:
            await asyncio.sleep(state.unload_delay_s)
        if state.adapters.pop(body.get("lora_name", ""), None) is None:
            return web.json_response({"error": {"message": "adapter not found"}}, status=404)
        return web.Response(text="Success")

    async def collective_rpc(request: web.Request) -> web.Response:
        body = await request.json()
        path = (body.get("kwargs") or {}).get("weights_path")
        if body.get("method") != "reload_weights" or not path:
            return web.json_response({"detail": "only reload_weights with a weights_path"}, status=400)
        state.weights, state.reloads = str(path), state.reloads + 1
        return web.json_response({"results": [None]})

    async def reset_prefix_cache(_: web.Request) -> web.Response:
        return web.json_response({"success": True})

    app.router.add_post("/collective_rpc", collective_rpc)
    app.router.add_post("/reset_prefix_cache", reset_prefix_cache)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/load_lora_adapter", load_lora)
    app.router.add_post("/v1/unload_lora_adapter", unload_lora)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--no-token-ids", action="store_true")
    p.add_argument("--refuse-extensions", action="store_true")
    p.add_argument("--delay-ms", type=float, default=0.0)
    a = p.parse_args()
    state = FakeState(
        token_ids=not a.no_token_ids,
        refuse_extensions=a.refuse_extensions,
        delay_s=a.delay_ms / 1000,
        keep_requests=False,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(state), host=a.host, port=a.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
