"""The front doors' translations into chat messages, and the episode keys (session keys, /e/ paths)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from typer.testing import CliRunner

from gateway.conversations import Conversations, Stored, parse_response_id, response_id
from gateway.errors import InvalidRequest
from gateway.messages import ToolArguments
from gateway.messages import to_chat as messages_to_chat
from gateway.responses import to_chat as responses_to_chat
from ledger.memstore import MemoryStore
from ledger.records import EpisodeEnd, parse_record
from rlgw.cli import app
from tests.fixtures.upstream import (
    FakeServer,
    GatewayServer,
    gateway_settings,
    recorded_turns,
    start_gateway,
    stop_gateway,
)

CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a":1}'}}
TOOL_CONVERSATION = [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "add"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "1"},
]


def test_responses_and_messages_translate_one_tool_conversation_alike() -> None:
    items: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": "add"}]},
        {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a":1}', "id": "fc_1"},
        {"type": "function_call_output", "call_id": "call_1", "output": "1"},
    ]
    tools: Any = [{"type": "function", "name": "add", "parameters": {"type": "object"}}]
    body = {"model": "rlgw", "instructions": "sys", "input": items, "tools": tools, "max_output_tokens": 9}
    chat, instructions = responses_to_chat(body, None)
    assert chat["messages"] == TOOL_CONVERSATION and instructions == 1 and chat["max_tokens"] == 9
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    ]

    args = ToolArguments()
    args.add("call_1", '{"a":1}')  # served compactly: sent back as served, not re-serialised
    anthropic_body: Any = {
        "model": "rlgw",
        "max_tokens": 9,
        "system": [{"type": "text", "text": "sys"}],
        "messages": [
            {"role": "user", "content": "add"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "call_1", "name": "add", "input": {"a": 1}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "1"}]},
        ],
        "tools": [{"name": "add", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
    }
    chat = messages_to_chat(anthropic_body, args)
    assert chat["messages"] == TOOL_CONVERSATION and chat["max_tokens"] == 9 and chat["stop"] == ["END"]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    fresh = messages_to_chat(anthropic_body, ToolArguments())  # another gateway: JSON re-serialised
    assert fresh["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'


@pytest.mark.parametrize(
    "body",
    [
        {"model": "rlgw"},  # no input
        {"model": "rlgw", "input": [{"type": "web_search_call"}]},
        {"model": "rlgw", "input": "x", "tools": [{"type": "web_search"}]},
        {"model": "rlgw", "input": "x", "background": True},
        {"model": "rlgw", "input": [{"role": "robot", "content": "x"}]},
    ],
)
def test_responses_requests_it_cannot_serve_are_400(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        responses_to_chat(body, None)


def test_response_ids_name_turn_and_episode() -> None:
    rid = response_id("0192-turn", "épisode/1.x")
    assert parse_response_id(rid) == ("0192-turn", "épisode/1.x")
    assert parse_response_id("resp_nodot") is None and parse_response_id("msg_x.y") is None


def test_path_prefix_binds_the_episode_on_every_door(gateway: GatewayServer) -> None:
    base = gateway.root + "/e/task-7"
    openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0).chat.completions.create(
        model="rlgw", messages=[{"role": "user", "content": "a"}]
    )
    openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0).responses.create(model="rlgw", input="b")
    anthropic.Anthropic(base_url=base, api_key="k", max_retries=0).messages.create(
        model="rlgw", max_tokens=8, messages=[{"role": "user", "content": "c"}]
    )
    thumbs = httpx.post(base + "/v1/feedback", json={"name": "thumbs", "value": True})
    assert thumbs.status_code == 200 and thumbs.json()["episode_id"] == "task-7"
    assert httpx.post(base + "/v1/episodes/task-7/end").status_code == 200
    session = httpx.post(gateway.url + "/sessions", json={"episode_id": "task-7"}).json()["key"]
    refused = httpx.post(
        gateway.url + "/responses", json={"model": "rlgw", "input": "x"}, headers={"x-api-key": session}
    )
    assert refused.status_code == 401  # the episode has ended: its session keys are refused here
    turns = recorded_turns(gateway, want=3)
    assert [t.episode_id for t in turns] == ["task-7"] * 3


def test_session_keys_bind_an_episode_for_the_tenant(tmp_path: Path, fake_upstream: FakeServer) -> None:
    gw = start_gateway(gateway_settings(tmp_path, [fake_upstream.url]))
    try:
        keys = gw.services.keys
        acme, other = keys.create("acme"), keys.create("other")
        resp = httpx.post(
            gw.url + "/sessions", json={"task": "geo"}, headers={"Authorization": f"Bearer {acme}"}
        )
        assert resp.status_code == 200
        session = resp.json()
        key, episode = session["key"], session["episode_id"]
        openai.OpenAI(base_url=gw.url, api_key=key, max_retries=0).responses.create(model="rlgw", input="a")
        anthropic.Anthropic(base_url=gw.root, api_key=key, max_retries=0).messages.create(
            model="rlgw", max_tokens=8, messages=[{"role": "user", "content": "b"}]
        )
        turns = recorded_turns(gw, want=2)
        assert {(t.episode_id, t.tenant, t.task) for t in turns} == {(episode, "acme", "geo")}
        tampered = key[:-2] + ("AA" if not key.endswith("AA") else "BB")
        bad = httpx.post(
            gw.url + "/responses", json={"model": "rlgw", "input": "x"}, headers={"x-api-key": tampered}
        )
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        by_session = httpx.post(gw.url + "/sessions", headers={"Authorization": f"Bearer {key}"}, json={})
        assert by_session.status_code == 403
        on_other_path = httpx.post(
            gw.root + "/e/elsewhere/v1/responses",
            json={"model": "rlgw", "input": "x"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert on_other_path.status_code == 403
        assert httpx.post(gw.url + "/sessions/end", headers={"x-api-key": key}).json()["status"] == "ended"
        gw.services.recorder.flush(5)
        ends = [r for m in gw.bus.messages("turns") if isinstance(r := parse_record(m.value), EpisodeEnd)]
        assert [(e.episode_id, e.tenant) for e in ends] == [(episode, "acme")]
        after = httpx.post(
            gw.url + "/responses", json={"model": "rlgw", "input": "x"}, headers={"x-api-key": key}
        )
        assert after.status_code == 401 and after.json()["error"]["code"] == "session_ended"
        # another tenant's key cannot continue this tenant's responses
        [first] = [t for t in turns if t.metadata.get("rlgw_door", {}).get("api") == "responses"]
        rid = response_id(first.id, episode)
        cont = httpx.post(
            gw.url + "/responses",
            json={"model": "rlgw", "input": "x", "previous_response_id": rid},
            headers={"Authorization": f"Bearer {other}"},
        )
        assert cont.status_code == 404
    finally:
        stop_gateway(gw)


def test_messages_route_answers_errors_in_anthropic_shape(tmp_path: Path, fake_upstream: FakeServer) -> None:
    gw = start_gateway(gateway_settings(tmp_path, [fake_upstream.url]))
    try:
        gw.services.keys.create("acme")
        resp = httpx.post(gw.url + "/messages", json={"model": "rlgw"}, headers={"x-api-key": "rlgw-wrong"})
        assert resp.status_code == 401
        assert resp.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid API key"},
        }
        resp = httpx.post(gw.url + "/messages", content=b"{", headers={"x-api-key": "rlgw-wrong"})
        assert resp.status_code == 401
    finally:
        stop_gateway(gw)


def test_another_gateway_continues_a_response_from_the_store(
    tmp_path: Path, fake_upstream: FakeServer
) -> None:
    """The state behind previous_response_id is the recorded turn: a second gateway that never
    saw the first response continues it once the store holds that turn."""
    first_gw = start_gateway(gateway_settings(tmp_path / "a", [fake_upstream.url]))
    second_gw = start_gateway(gateway_settings(tmp_path / "b", [fake_upstream.url]))
    try:
        store = MemoryStore()
        second_gw.services.conversations.store = store
        c = openai.OpenAI(base_url=first_gw.url, api_key="k", max_retries=0)
        first = c.responses.create(model="rlgw", input="remember me", instructions="old rules")
        [turn] = recorded_turns(first_gw)
        store.write([turn])  # what the store writer does from the bus
        other = openai.OpenAI(base_url=second_gw.url, api_key="k", max_retries=0)
        other.responses.create(
            model="rlgw", input="next", instructions="new rules", previous_response_id=first.id
        )
        [cont] = recorded_turns(second_gw)
        assert cont.episode_id == turn.episode_id
        assert cont.request["messages"] == [
            {"role": "system", "content": "new rules"},
            {"role": "user", "content": "remember me"},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "next"},
        ]
        unstored = c.responses.create(model="rlgw", input="private", store=False)
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model="rlgw", input="x", previous_response_id=unstored.id)
    finally:
        stop_gateway(first_gw)
        stop_gateway(second_gw)


def test_rlgw_sessions_create_and_end(gateway: GatewayServer) -> None:
    runner = CliRunner()
    made = runner.invoke(
        app, ["sessions", "create", "--url", gateway.root, "--task", "geo", "--episode-id", "a b"]
    )
    assert made.exit_code == 0, made.output
    session = json.loads(made.output)
    assert session["episode_id"] == "a b" and session["openai_base_url"] == gateway.root + "/e/a%20b/v1"
    client = openai.OpenAI(base_url=session["openai_base_url"], api_key=session["key"], max_retries=0)
    client.responses.create(model="rlgw", input="hi")
    [turn] = recorded_turns(gateway)
    assert (turn.episode_id, turn.task) == ("a b", "geo")
    ended = runner.invoke(app, ["sessions", "end", session["key"], "--url", gateway.root])
    assert ended.exit_code == 0 and json.loads(ended.output)["status"] == "ended"


def test_upstream_failures_reach_each_door_in_its_shape(
    gateway: GatewayServer, fake_upstream: FakeServer
) -> None:
    fake_upstream.state.fail_next = 2
    msg = {"model": "rlgw", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    resp = httpx.post(gateway.url + "/messages", json=msg)
    assert resp.status_code == 502 and resp.json()["error"]["type"] == "api_error"
    resp = httpx.post(gateway.url + "/messages", json={**msg, "stream": True})
    assert resp.status_code == 502 and resp.json()["type"] == "error"
    fake_upstream.state.fail_next = 1
    resp = httpx.post(gateway.url + "/responses", json={"model": "rlgw", "input": "x", "stream": True})
    assert resp.status_code == 502 and resp.json()["error"]["type"] == "upstream_error"


def test_conversations_kept_in_memory_are_bounded_by_their_text() -> None:
    conversations = Conversations(None, capacity_chars=1000)
    for i in range(20):
        msgs = [{"role": "user", "content": "x" * 200}]
        conversations.remember(
            Stored(f"r{i}", "t", "e", msgs, 0, {"role": "assistant", "content": "y"}, True)
        )
    kept = [i for i in range(20) if asyncio.run(conversations.get(f"r{i}", "t")) is not None]
    assert kept and kept == list(range(20 - len(kept), 20)) and len(kept) < 5
