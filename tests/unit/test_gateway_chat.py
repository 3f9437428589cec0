"""The gateway through the official openai SDK, against a real HTTP upstream (the fake replica)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from gateway.fake_upstream import decode
from ledger.records import Turn, parse_record
from tests.fixtures.upstream import FakeServer, GatewayServer, recorded_turns


def turns(gw: GatewayServer, want: int = 1) -> list[Turn]:
    return recorded_turns(gw, want, flush_s=5)


def client(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0)


def test_non_streaming_reply_and_token_exact_record(gateway: GatewayServer) -> None:
    reply = client(gateway).chat.completions.with_raw_response.create(
        model="rlgw", messages=[{"role": "user", "content": "héllo"}], temperature=0.3
    )
    completion = reply.parse()
    text = completion.choices[0].message.content
    assert text == "echo[fake-base#0]: héllo"
    assert completion.model == "rlgw"  # the public name, not the upstream's
    assert completion.choices[0].logprobs is None  # the client did not ask for them
    assert "prompt_token_ids" not in (completion.model_extra or {})
    episode = reply.headers["x-episode-id"]
    [turn] = turns(gateway)
    assert turn.episode_id == episode and turn.version == "base" and turn.tokens_recorded
    choice = turn.choices[0]
    assert choice.token_ids is not None and decode(choice.token_ids) == text
    assert choice.logprobs is not None and len(choice.logprobs) == len(choice.token_ids)
    assert turn.prompt_token_ids and turn.request["temperature"] == 0.3
    assert turn.usage and turn.usage["completion_tokens"] == len(choice.token_ids)


def test_streaming_passes_chunks_and_records_the_whole_reply(gateway: GatewayServer) -> None:
    stream = client(gateway).chat.completions.create(
        model="rlgw",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Episode-Id": "ep-stream"},
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {"rlgw"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo[fake-base#0]: stream me"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(text.encode())
    assert all(c.choices[0].logprobs is None for c in chunks if c.choices)
    [turn] = turns(gateway)
    assert turn.episode_id == "ep-stream" and turn.stream and turn.ttft_ms is not None
    assert turn.choices[0].message["content"] == text
    assert decode(turn.choices[0].token_ids or []) == text
    assert turn.tokens_recorded


def test_stream_without_include_usage_gets_no_usage_chunk(gateway: GatewayServer) -> None:
    chunks = list(
        client(gateway).chat.completions.create(
            model="rlgw", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert turns(gateway)[0].usage is not None  # the record still has it


def test_client_logprobs_and_n(gateway: GatewayServer) -> None:
    completion = client(gateway).chat.completions.create(
        model="rlgw", messages=[{"role": "user", "content": "two"}], n=2, logprobs=True, top_logprobs=1
    )
    assert [c.message.content for c in completion.choices] == [
        "echo[fake-base#0]: two",
        "echo[fake-base#1]: two",
    ]
    lp = completion.choices[1].logprobs
    assert lp is not None and lp.content and lp.content[0].top_logprobs
    [turn] = turns(gateway)
    assert len(turn.choices) == 2 and all(c.token_ids for c in turn.choices)
    assert gateway.services.chat.pool.replicas[0].outstanding == 0


def test_tool_calls_streamed_and_recorded(gateway: GatewayServer) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    completion = client(gateway).chat.completions.create(
        model="rlgw",
        messages=[{"role": "user", "content": "use a tool"}],
        tools=tools,  # type: ignore[arg-type]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    [turn] = turns(gateway)
    assert turn.choices[0].message["tool_calls"][0]["function"]["name"] == "lookup"
    assert turn.request["tools"] == tools


async def test_async_client_episode_from_metadata_and_end_header(gateway: GatewayServer) -> None:
    aclient = openai.AsyncOpenAI(base_url=gateway.url, api_key="unused", max_retries=0)
    await aclient.chat.completions.create(
        model="rlgw",
        messages=[{"role": "user", "content": "a"}],
        metadata={"episode_id": "ep-meta", "task": "geo"},
    )
    await aclient.chat.completions.create(
        model="rlgw",
        messages=[{"role": "user", "content": "b"}],
        user="ep-meta",
        extra_headers={"X-Episode-End": "true"},
    )
    await aclient.close()
    assert gateway.services.recorder.flush(5)
    recs: list[Any] = [parse_record(m.value) for m in gateway.bus.messages("turns")]
    kinds = [(r.kind, getattr(r, "episode_id", None)) for r in recs]
    assert kinds == [("turn", "ep-meta"), ("turn", "ep-meta"), ("episode_end", "ep-meta")]
    assert (
        isinstance(recs[0], Turn)
        and recs[0].task == "geo"
        and recs[0].metadata == {"episode_id": "ep-meta", "task": "geo"}
    )
    sent = gateway.services.chat.pool  # the upstream never sees our metadata
    assert sent is not None


def test_unknown_fields_pass_through(gateway: GatewayServer, fake_upstream) -> None:  # type: ignore[no-untyped-def]
    client(gateway).chat.completions.create(
        model="rlgw",
        messages=[{"role": "user", "content": "a"}],
        extra_body={"top_k": 5, "my_flag": "x"},
        metadata={"task": "t"},
    )
    sent = fake_upstream.state.requests[-1]
    assert sent["top_k"] == 5 and sent["my_flag"] == "x" and "metadata" not in sent
    assert sent["model"] == "fake-base" and sent["return_token_ids"] is True and sent["logprobs"] is True


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [
        ({"model": "nope", "messages": [{"role": "user", "content": "a"}]}, 404, "model"),
        ({"model": "rlgw", "messages": []}, 400, "messages"),
        ({"model": "rlgw", "messages": [{"role": "user", "content": "a"}], "n": 1000}, 400, "n"),
        (
            {"model": "rlgw", "messages": [{"role": "user", "content": "a"}], "max_tokens": 10**9},
            400,
            "max_tokens",
        ),
    ],
)
def test_bad_requests_get_openai_errors(
    gateway: GatewayServer, kwargs: dict, status: int, param: str
) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client(gateway).chat.completions.create(**kwargs)
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == param and body["message"]


def test_response_format_passes_through(gateway: GatewayServer, fake_upstream) -> None:  # type: ignore[no-untyped-def]
    completion = client(gateway).chat.completions.create(
        model="rlgw", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
    )
    assert completion.choices[0].message.content == '{"answer":"x"}'
    assert fake_upstream.state.requests[-1]["response_format"] == {"type": "json_object"}


def test_a_client_leaving_mid_stream_stops_the_relay_and_is_recorded(
    gateway: GatewayServer, fake_upstream: FakeServer
) -> None:
    fake_upstream.state.delay_s = 0.3  # between chunks: the stream lasts for seconds
    body = {"model": "rlgw", "messages": [{"role": "user", "content": "a long answer"}], "stream": True}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gateway.url + "/chat/completions", json=body) as resp,
    ):
        first = next(resp.iter_raw())
        assert first.startswith(b"data: ")
    # the client hung up after one event: the relay ends and the turn says why
    [turn] = turns(gateway)
    assert turn.error is not None and "client disconnected" in turn.error
    content = turn.choices[0].message["content"] if turn.choices else ""
    assert len(content or "") < len("echo[fake-base#0]: a long answer")  # the rest never came
    deadline = time.monotonic() + 5
    while gateway.services.pool.replicas[0].outstanding and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.services.pool.replicas[0].outstanding == 0
