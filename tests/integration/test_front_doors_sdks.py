"""The three front doors through the real client libraries, against the gateway in front of the
in-repo fake replica (which calls the first tool offered until it gets a tool's result)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.fixtures.upstream import GatewayServer, recorded_turns

pytestmark = pytest.mark.integration

TOOL_SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def oai(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0)


def claude(gw: GatewayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.root, api_key="unused", max_retries=0)


def test_responses_create_and_continue_by_previous_response_id(gateway: GatewayServer) -> None:
    c = oai(gateway)
    first = c.responses.create(model="rlgw", input="hello there", instructions="Be brief.")
    assert first.output_text == "echo[fake-base#0]: hello there"
    assert first.status == "completed" and first.usage is not None and first.usage.output_tokens > 0
    second = c.responses.create(model="rlgw", input="and again", previous_response_id=first.id)
    assert second.output_text == "echo[fake-base#0]: and again"
    one, two = recorded_turns(gateway, want=2)
    assert one.episode_id == two.episode_id  # a continuation stays in its episode
    assert (
        two.request["messages"]
        == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": "echo[fake-base#0]: hello there"},
            {"role": "user", "content": "and again"},
        ][1:]
    )  # instructions are not carried on
    assert all(t.tokens_recorded for t in (one, two))
    assert c.responses.retrieve(first.id).output_text == first.output_text


def test_responses_stream_with_a_tool_call_split_over_deltas(gateway: GatewayServer) -> None:
    tools: Any = [{"type": "function", "name": "lookup", "parameters": TOOL_SCHEMA}]
    events = list(oai(gateway).responses.create(model="rlgw", input="find x", tools=tools, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.function_call_arguments.delta") > 1
    final = events[-1].response  # type: ignore[union-attr]
    [call] = final.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "lookup" and json.loads(call.arguments) == {"q": "x"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    [turn] = recorded_turns(gateway)
    assert turn.stream and turn.tokens_recorded
    assert turn.choices[0].message["tool_calls"][0]["function"]["arguments"] == call.arguments


def test_responses_errors_in_openai_shape(gateway: GatewayServer) -> None:
    with pytest.raises(openai.NotFoundError):
        oai(gateway).responses.create(model="rlgw", input="x", previous_response_id="resp_nope")
    with pytest.raises(openai.BadRequestError) as bad:
        unsupported: Any = [{"type": "web_search_call", "id": "w"}]
        oai(gateway).responses.create(model="rlgw", input=unsupported)
    assert "not supported" in bad.value.message


def test_anthropic_messages_tool_loop_and_stream(gateway: GatewayServer) -> None:
    c = claude(gateway)
    tools: Any = [{"name": "lookup", "description": "look up", "input_schema": TOOL_SCHEMA}]
    msgs: Any = [{"role": "user", "content": "find x"}]
    first = c.messages.create(model="rlgw", max_tokens=64, system="Use tools.", messages=msgs, tools=tools)
    assert first.stop_reason == "tool_use"
    [use] = first.content
    assert use.type == "tool_use" and use.name == "lookup" and use.input == {"q": "x"}
    msgs += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "x is 42"}]},
    ]
    with c.messages.stream(model="rlgw", max_tokens=64, messages=msgs, tools=tools) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo[fake-base#0]: find x" and final.stop_reason == "end_turn"
    one, two = recorded_turns(gateway, want=2)
    assert two.request["messages"] == [
        {"role": "user", "content": "find x"},
        {"role": "assistant", "content": None, "tool_calls": one.choices[0].message["tool_calls"]},
        {"role": "tool", "tool_call_id": use.id, "content": "x is 42"},
    ]
    assert one.request["messages"][0] == {"role": "system", "content": "Use tools."}
    assert one.tokens_recorded and two.tokens_recorded and two.stream


def test_anthropic_stream_of_a_tool_use_and_errors_in_anthropic_shape(gateway: GatewayServer) -> None:
    c = claude(gateway)
    tools: Any = [{"name": "lookup", "input_schema": TOOL_SCHEMA}]
    with c.messages.stream(
        model="rlgw", max_tokens=64, messages=[{"role": "user", "content": "q"}], tools=tools
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == {"q": "x"}  # type: ignore[union-attr]
    with pytest.raises(anthropic.NotFoundError) as missing:
        c.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "q"}])
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(model="rlgw", max_tokens=8, messages=[])
