"""What translating costs, in process: CPU per request of the Responses and Messages front doors'
request translation and reply rendering, over chat completions' own rendering of the same reply.

Each case is the whole per-request work a door adds: parse nothing (the body is already JSON),
translate the request into a chat body, then render the served reply, whole (`plain`) or as a
stream of 32 content chunks and a usage chunk (`stream`). Chat's row renders the same reply
through the plain `Door`. `gateway_overhead.py --doors` measures the same end to end.

    python benchmarks/front_doors.py [--iterations 20000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from gateway.conversations import Conversations
from gateway.doors import CHAT, Door
from gateway.episodes import CallContext, EpisodeRef
from gateway.messages import ToolArguments
from gateway.messages import to_chat as messages_to_chat
from gateway.messages_render import MessagesDoor
from gateway.responses import to_chat as responses_to_chat
from gateway.responses_render import ResponsesDoor

MESSAGES = [{"role": "user", "content": "benchmark me, please"}]
REPLY: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "rlgw",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "word " * 32}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 32, "total_tokens": 44},
}
CHUNKS: list[dict[str, Any]] = [
    {"id": "c", "model": "rlgw", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
]
CHUNKS += [{"id": "c", "model": "rlgw", "choices": [{"index": 0, "delta": {"content": "word "}}]}] * 32
CHUNKS += [{"id": "c", "model": "rlgw", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
CHUNKS += [{"id": "c", "model": "rlgw", "choices": [], "usage": REPLY["usage"]}]
HEADERS = {"X-Episode-Id": "e", "X-Turn-Id": "t", "X-Model-Version": "base"}


def ctx() -> CallContext:
    return CallContext("default", EpisodeRef("e", False, False, None), "t", None)


def render(door: Door, stream: bool) -> None:
    if not stream:
        door.reply(dict(REPLY), HEADERS)
        return
    r = door.stream()
    for chunk in CHUNKS:
        r.chunk(chunk)
    r.done()


def chat(stream: bool) -> None:
    render(CHAT, stream)


def responses(stream: bool, conversations: Conversations = Conversations(None)) -> None:
    body = {"model": "rlgw", "input": "benchmark me, please", "max_output_tokens": 32, "stream": stream}
    chat_body, n = responses_to_chat(body, None)
    render(ResponsesDoor(body, chat_body, n, ctx(), conversations, "rlgw"), stream)


def messages(stream: bool, args: ToolArguments = ToolArguments()) -> None:
    body = {"model": "rlgw", "messages": MESSAGES, "max_tokens": 32, "stream": stream}
    messages_to_chat(body, args)
    render(MessagesDoor(body, ctx(), args.add, "rlgw"), stream)


def cpu_us(fn: Callable[[bool], Any], stream: bool, n: int) -> float:
    for _ in range(200):
        fn(stream)
    t0 = time.process_time()
    for _ in range(n):
        fn(stream)
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20000)
    a = ap.parse_args()
    print(f"{'case':<8}{'door':<11}{'CPU-us/req':>11}{'over chat':>11}")
    for stream in (False, True):
        case = "stream" if stream else "plain"
        base = cpu_us(chat, stream, a.iterations)
        print(f"{case:<8}{'chat':<11}{base:11.1f}{'':>11}")
        for name, fn in (("responses", responses), ("messages", messages)):
            us = cpu_us(fn, stream, a.iterations)
            print(f"{case:<8}{name:<11}{us:11.1f}{us - base:+11.1f}")


if __name__ == "__main__":
    main()
