"""Evaluation requests yield to live traffic (gateway/eval_admission.py), through the real pool
and upstream client against the fake upstream: an evaluation request in flight on a replica is
cancelled when a live request is routed there, sent again (the same body) once the replica is
idle, and answers as it would have; past `max_preemptions` it runs to its end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from gateway.eval_admission import EvalAdmission
from gateway.fake_upstream import FakeState
from gateway.pool import Pool
from tests.fixtures.drills import wait_for
from tests.fixtures.upstream import FakeServer, start_fake

EVAL = {"model": "fake-base", "messages": [{"role": "user", "content": "sky?"}], "seed": 7, "max_tokens": 16}
LIVE = {"model": "fake-base", "messages": [{"role": "user", "content": "live"}], "max_tokens": 16}


@pytest.fixture(scope="module")
def slow_fake() -> Iterator[FakeServer]:
    server = start_fake(FakeState(delay_s=0.4))
    yield server
    server.stop.set()


async def ask(pool: Pool, body: dict[str, Any], only: frozenset[str] | None = None, **kw: Any) -> str:
    async with pool.post("/chat/completions", orjson.dumps(body), only, **kw) as (_, resp):
        data = orjson.loads(await resp.read())
    return str(data["choices"][0]["message"]["content"])


def evaluator(pool: Pool) -> Callable[[frozenset[str] | None, Callable[[Any], None]], Any]:
    async def send(targets: frozenset[str] | None, placed: Callable[[Any], None]) -> str:
        def body(replica: Any) -> bytes:
            placed(replica)
            return orjson.dumps(EVAL)

        async with pool.post("/chat/completions", body, targets, background=True) as (_, resp):
            data = orjson.loads(await resp.read())
        return str(data["choices"][0]["message"]["content"])

    return send


def eval_bodies(fake: FakeServer) -> list[dict[str, Any]]:
    return [b for b in fake.state.requests if b["messages"] == EVAL["messages"]]


async def test_an_eval_request_yields_to_a_live_one_and_is_retried_with_the_same_body(slow_fake) -> None:  # type: ignore[no-untyped-def]
    slow_fake.state.requests.clear()
    pool = Pool([slow_fake.url])
    counted: list[int] = []
    gate = EvalAdmission(
        pool, 2, 8, 10.0, yield_to_live=True, max_preemptions=3, on_preempt=lambda: counted.append(1)
    )
    expected = await ask(pool, EVAL, background=True)  # the answer with nothing in the way
    evaluation = asyncio.create_task(gate.run(None, evaluator(pool)))
    await asyncio.to_thread(
        wait_for, lambda: len(eval_bodies(slow_fake)) == 2, "the evaluation request upstream", 5
    )
    live = asyncio.create_task(ask(pool, LIVE))
    await asyncio.sleep(0.1)
    assert gate.preemptions == 1 and counted == [1]  # cancelled the moment the live one came
    assert pool.replicas[0].outstanding == 1  # only the live request holds the replica
    assert not evaluation.done()  # waiting for the replica to be idle again
    await live
    assert await evaluation == expected
    retried = eval_bodies(slow_fake)
    assert len(retried) == 3 and retried[1] == retried[2]  # sent again, the same body and seed
    assert gate.running == 0 and gate.forced == 0
    await pool.close()


async def test_after_max_preemptions_an_eval_request_runs_to_its_end(slow_fake) -> None:  # type: ignore[no-untyped-def]
    slow_fake.state.requests.clear()
    pool = Pool([slow_fake.url])
    gate = EvalAdmission(pool, 2, 8, 10.0, yield_to_live=True, max_preemptions=1)
    evaluation = asyncio.create_task(gate.run(None, evaluator(pool)))
    await asyncio.to_thread(
        wait_for, lambda: len(eval_bodies(slow_fake)) == 1, "the evaluation request upstream", 5
    )
    await ask(pool, LIVE)  # pre-empts it once: the bound is reached
    await asyncio.to_thread(wait_for, lambda: len(eval_bodies(slow_fake)) == 2, "the retry upstream", 5)
    assert gate.preemptions == 1 and gate.forced == 1
    await ask(pool, LIVE)  # shares the replica: the evaluation request is not cancelled again
    assert gate.preemptions == 1
    assert (await evaluation).startswith("echo[")
    assert len(eval_bodies(slow_fake)) == 2
    await pool.close()


async def test_without_yield_a_live_request_cancels_nothing(slow_fake) -> None:  # type: ignore[no-untyped-def]
    slow_fake.state.requests.clear()
    pool = Pool([slow_fake.url])
    gate = EvalAdmission(pool, 2, 8, 10.0, yield_to_live=False)
    evaluation = asyncio.create_task(gate.run(None, evaluator(pool)))
    await asyncio.to_thread(
        wait_for, lambda: len(eval_bodies(slow_fake)) == 1, "the evaluation request upstream", 5
    )
    await ask(pool, LIVE)
    await evaluation
    assert gate.preemptions == 0 and len(eval_bodies(slow_fake)) == 1
    await pool.close()
