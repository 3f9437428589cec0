"""PII scrubbing of recorded turns and feedback (ledger.scrub_pii)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gateway.scrub import scrub_feedback, scrub_text, scrub_turn
from ledger.records import Feedback, Turn, TurnChoice, parse_record
from tests.fixtures.upstream import FakeServer, gateway_settings, start_gateway, stop_gateway


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("mail me at jane.doe+x@example.co.uk today", "mail me at <EMAIL> today"),
        ("card 4111 1111 1111 1111 exp 12/29", "card <CARD> exp 12/29"),
        ("card 4111-1111-1111-1112 fails Luhn", "card 4111-1111-1111-1112 fails Luhn"),
        ("call +1 (415) 555-0123 or 020 7946 0958", "call <PHONE> or <PHONE>"),
        ("in 2024 we sold 1500 units at 3.5", "in 2024 we sold 1500 units at 3.5"),
    ],
)
def test_scrub_text(text: str, want: str) -> None:
    assert scrub_text(text) == want


def test_scrubbed_turn_drops_token_ids_and_keeps_roles() -> None:
    turn = Turn(
        episode_id="e",
        model="m",
        version="v",
        request={"messages": [{"role": "user", "content": [{"type": "text", "text": "a@b.io"}]}], "n": 1},
        choices=[
            TurnChoice(
                message={"role": "assistant", "content": "4111111111111111"}, token_ids=[1], logprobs=[-0.1]
            )
        ],
        prompt_token_ids=[1, 2],
        tokens_recorded=True,
    )
    out = Turn.model_validate(scrub_turn(turn.model_dump(by_alias=True)))
    assert out.request == {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "<EMAIL>"}]}],
        "n": 1,
    }
    assert out.choices[0].message == {"role": "assistant", "content": "<CARD>"}
    assert out.choices[0].token_ids is None and out.choices[0].logprobs is None
    assert out.prompt_token_ids is None and not out.tokens_recorded
    fb = scrub_feedback(Feedback(episode_id="e", name="demo", value=[{"role": "user", "content": "x@y.org"}]))
    assert fb.value == [{"role": "user", "content": "<EMAIL>"}]


def test_the_gateway_scrubs_records_but_not_replies(tmp_path: Path, fake_upstream: FakeServer) -> None:
    settings = gateway_settings(tmp_path, [fake_upstream.url])
    settings.ledger.scrub_pii = True
    gw = start_gateway(settings)
    try:
        body = {"model": "rlgw", "messages": [{"role": "user", "content": "I am bob@example.com"}]}
        assert httpx.post(gw.url + "/chat/completions", json=body, timeout=10).status_code == 200
        fb = {"episode_id": "e", "name": "comment", "value": "reach me at bob@example.com"}
        assert httpx.post(gw.url + "/feedback", json=fb, timeout=10).status_code == 200
        deadline = time.monotonic() + 5
        while not (gw.bus.messages("turns") and gw.bus.messages("feedback")):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        turn = parse_record(gw.bus.messages("turns")[0].value)
        feedback = parse_record(gw.bus.messages("feedback")[0].value)
        assert isinstance(turn, Turn) and isinstance(feedback, Feedback)
        assert turn.request["messages"][0]["content"] == "I am <EMAIL>" and not turn.tokens_recorded
        assert feedback.value == "reach me at <EMAIL>"
        assert b"bob@example.com" not in gw.bus.messages("turns")[0].value
    finally:
        stop_gateway(gw)
