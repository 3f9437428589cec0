"""The feedback service: a client's judgement of an episode or one of its turns, recorded.

Feedback names its target by episode id, or by turn id alone: the bounded index of turns holds
every gateway's turns (the turns feed, gateway/turn_lookup.py); a turn of another tenant is
unknown here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from gateway.episodes import TurnIndex
from gateway.errors import NotFound
from gateway.scrub import scrub_feedback
from gateway.turn_lookup import episode_of_turn
from ledger.recorder import Recorder
from ledger.records import TOPIC_FEEDBACK, Feedback, FeedbackValue


class FeedbackIn(BaseModel):
    """The body of POST /v1/feedback; a misspelt field is refused, not dropped."""

    model_config = ConfigDict(extra="forbid")

    episode_id: str | None = None
    turn_id: str | None = None
    name: str
    value: FeedbackValue
    done: bool = False

    @model_validator(mode="after")
    def _target(self) -> FeedbackIn:
        if not (self.episode_id or self.turn_id):
            raise ValueError("give 'episode_id' or 'turn_id'")
        return self


class FeedbackService:
    def __init__(self, turns: TurnIndex, recorder: Recorder, *, scrub_pii: bool) -> None:
        self.turns, self.recorder, self.scrub_pii = turns, recorder, scrub_pii
        self.feed: Any = None  # the turns feed that fills `turns`, once started (gateway/fleet.py)

    async def give(self, fb: FeedbackIn, tenant: str) -> Feedback:
        """Record `fb` from `tenant`; the record (with its episode) is returned."""
        episode_id = fb.episode_id
        if fb.turn_id:
            known = await episode_of_turn(self.turns, self.feed, fb.turn_id)
            if known is None and episode_id is None:
                raise NotFound(f"unknown turn {fb.turn_id}; give its episode_id too", param="turn_id")
            if known is not None:
                if known[1] != tenant:
                    raise NotFound(f"unknown turn {fb.turn_id}", param="turn_id")
                episode_id = known[0]
        assert episode_id is not None
        record = Feedback(
            episode_id=episode_id,
            turn_id=fb.turn_id,
            name=fb.name,
            value=fb.value,
            done=fb.done,
            tenant=tenant,
        )
        self.recorder.record(TOPIC_FEEDBACK, scrub_feedback(record) if self.scrub_pii else record)
        return record
