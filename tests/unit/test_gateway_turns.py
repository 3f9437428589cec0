"""Turns are written as plain data (no pydantic on the request path): that data must be exactly
a `Turn` — every field present, and nothing a reader's validation would change."""

from __future__ import annotations

import time

import orjson

from gateway.episodes import CallContext, EpisodeRef
from gateway.pool import Replica
from gateway.routing import Route
from gateway.tap import choice
from gateway.turns import Call, TurnWriter
from ledger.bus import MemoryBus
from ledger.recorder import Recorder
from ledger.records import EpisodeEnd, Turn, parse_record


def written(scrub_pii: bool = False) -> list[bytes]:
    bus = MemoryBus()
    recorder = Recorder(bus)
    writer = TurnWriter(recorder, "rlgw", scrub_pii=scrub_pii)
    body = {
        "model": "rlgw",
        "messages": [{"role": "user", "content": "mail me at a@b.example"}],
        "temperature": 0.7,
        "metadata": {"task": "t1", "episode_id": "e1"},
    }
    ctx = CallContext("acme", EpisodeRef("e1", generated=False, end=True, task="t1"))
    call = Call(body, ctx, Route("v2", "rlgw-v2"), Replica("http://r:8000/v1"), time.time(), stream=True)
    choices = [choice(0, {"role": "assistant", "content": "ok"}, "stop", [5, 6], [-0.1, -0.25])]
    writer.served(call, 0.012, choices, {"prompt_tokens": 3}, [1, 2, 3], ttft=0.004, error=None)
    recorder.start()
    assert recorder.flush(5)
    recorder.close()
    return [m.value for m in bus.messages("turns")]


def test_a_written_turn_has_every_field_of_turn_and_survives_validation_unchanged() -> None:
    raw_turn, raw_end = written()
    data = orjson.loads(raw_turn)
    fields = {f.alias or name for name, f in Turn.model_fields.items()}
    assert set(data) == fields
    turn = parse_record(raw_turn)
    assert isinstance(turn, Turn)
    assert orjson.loads(turn.to_bytes()) == data  # validation changed nothing
    assert (turn.episode_id, turn.tenant, turn.version, turn.stream) == ("e1", "acme", "v2", True)
    assert turn.tokens_recorded and turn.prompt_token_ids == [1, 2, 3]
    assert turn.choices[0].logprobs == [-0.1, -0.25] and turn.ttft_ms == 4.0
    assert "metadata" not in turn.request and turn.metadata == {"task": "t1", "episode_id": "e1"}
    assert isinstance(parse_record(raw_end), EpisodeEnd)  # X-Episode-End closed it


def test_scrubbed_turns_are_validated_then_scrubbed() -> None:
    raw_turn, _ = written(scrub_pii=True)
    turn = parse_record(raw_turn)
    assert isinstance(turn, Turn)
    assert "a@b.example" not in raw_turn.decode()
    assert not turn.tokens_recorded and turn.prompt_token_ids is None
