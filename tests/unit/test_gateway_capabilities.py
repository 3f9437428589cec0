"""Token ids and log-probs are a property of each replica, asked by the pool, never inferred
from a client's request (issue #13, item 1)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.fake_upstream import FakeState
from tests.fixtures.upstream import gateway_settings as settings_for
from tests.fixtures.upstream import recorded_turns, start_fake, start_gateway, stop_gateway

MSG: Any = [{"role": "user", "content": "hi"}]


def client(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)


def test_one_clients_bad_logprobs_request_changes_nothing_for_the_others(tmp_path: Path) -> None:
    fake = start_fake(FakeState(max_logprobs=20))
    gw = start_gateway(settings_for(tmp_path, [fake.url]))
    try:
        with pytest.raises(openai.BadRequestError, match="greater than max allowed: 20"):
            client(gw).chat.completions.create(model="rlgw", messages=MSG, logprobs=True, top_logprobs=50)
        client(gw).chat.completions.create(model="rlgw", messages=MSG)
        stream = client(gw).chat.completions.create(model="rlgw", messages=MSG, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        turns = recorded_turns(gw, want=2)
        assert len(turns) == 2 and all(t.tokens_recorded for t in turns)
        assert gw.services.pool.replicas[0].tokens is True
    finally:
        stop_gateway(gw)
        fake.stop.set()


def test_a_replica_refusing_the_fields_serves_streams_and_non_streams_without_them(tmp_path: Path) -> None:
    strict = start_fake(FakeState(refuse_extensions=True))
    gw = start_gateway(settings_for(tmp_path, [strict.url]))
    try:
        assert gw.services.pool.replicas[0].tokens is False  # probed at start
        reply = client(gw).chat.completions.create(model="rlgw", messages=MSG)
        assert reply.choices[0].message.content
        stream = client(gw).chat.completions.create(model="rlgw", messages=MSG, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        turns = recorded_turns(gw, want=2)
        assert len(turns) == 2 and not any(t.tokens_recorded for t in turns)
        chats = [r for r in strict.state.requests if r.get("messages") == MSG]
        assert chats and not any("return_token_ids" in r for r in chats)
    finally:
        stop_gateway(gw)
        strict.stop.set()


def test_support_is_per_replica_and_asked_again_when_a_replica_comes_back(tmp_path: Path) -> None:
    vllm_like, strict = start_fake(), start_fake(FakeState(refuse_extensions=True))
    gw = start_gateway(settings_for(tmp_path, [vllm_like.url, strict.url]))
    try:
        pool = gw.services.pool
        assert [r.tokens for r in pool.replicas] == [True, False]
        for _ in range(4):  # least-outstanding with round-robin ties: both replicas serve
            client(gw).chat.completions.create(model="rlgw", messages=MSG)
        turns = recorded_turns(gw, want=4)
        by_replica = {t.upstream: t.tokens_recorded for t in turns}
        assert by_replica == {pool.replicas[0].url: True, pool.replicas[1].url: False}
        strict.state.refuse_extensions = False  # "replaced" by a server that has the fields
        pool._mark_down(pool.replicas[1], "test: went away")
        assert pool.replicas[1].tokens is None
        asyncio.run_coroutine_threadsafe(pool.check(pool.replicas[1]), gw.services.loop).result(10)  # type: ignore[arg-type]
        assert pool.replicas[1].healthy and pool.replicas[1].tokens is True
    finally:
        stop_gateway(gw)
        vllm_like.stop.set()
        strict.stop.set()
