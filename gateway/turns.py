"""Writing the record of a served call: its Turn(s), episode ends, and the turn → episode index.

One `Call` carries what every record of a call shares (the request, who asked, the route and
the replica, when it started); `TurnWriter` builds Turns from it and hands them to the ledger.
A turn is built from the `ledger.records.Turn` record as plain data (`ledger.plain`: its fields,
its defaults, no unknown names) and serialised with orjson (`Encoded`): the request path never
validates the pydantic model (see `Encoded` for the figures). Scrubbing works on that data too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.episodes import CallContext, TurnIndex
from gateway.explore import Exploration
from gateway.pool import Replica
from gateway.routing import Route
from gateway.scrub import scrub_turn
from gateway.tap import Choice, tokens_complete
from ledger.ids import new_id
from ledger.plain import plain
from ledger.recorder import Recorder
from ledger.records import TOPIC_TURNS, Encoded, EpisodeEnd, FailedCall, Turn
from ledger.sampling import sampling_of


@dataclass(frozen=True, slots=True)
class Call:
    """One call a replica answered: what each of its records shares."""

    body: dict[str, Any]
    ctx: CallContext
    route: Route
    replica: Replica
    started: float  # unix seconds
    stream: bool


class TurnWriter:
    def __init__(self, recorder: Recorder, public_model: str, *, scrub_pii: bool = False) -> None:
        self.recorder, self.public_model = recorder, public_model
        self.scrub_pii = scrub_pii  # records only: the client's reply is untouched
        self.index = TurnIndex()  # so feedback may name just a turn

    def served(
        self,
        call: Call,
        latency: float,
        choices: list[Choice],
        usage: dict[str, Any] | None,
        prompt_ids: list[int] | None,
        *,
        ttft: float | None = None,
        error: str | None = None,
        group_id: str | None = None,
        status: int = 200,
    ) -> None:
        """The client's turn (`status`: what the client got; a broken stream's is not 200);
        ends its episode when the client said so."""
        ctx = call.ctx
        turn = self._turn(
            call,
            ctx.turn_id,
            ctx.episode.episode_id,
            latency,
            choices,
            usage,
            prompt_ids,
            ttft=ttft,
            error=error,
            group_id=group_id,
            status=status,
        )
        self._write(turn)
        self.index.add(ctx.turn_id, ctx.episode.episode_id, ctx.tenant)
        if ctx.episode.end:
            self.end_episode(ctx.episode.episode_id, ctx.tenant, "client")

    def alternatives(
        self,
        call: Call,
        latency: float,
        choices: list[Choice],
        prompt_ids: list[int] | None,
        group_id: str,
    ) -> None:
        """The completions of an exploration group the client did not get: each in an episode of
        its own, ended at once."""
        eid = call.ctx.episode.episode_id
        for i, alt in enumerate(choices, 1):
            alt["index"] = 0
            turn = self._turn(
                call,
                new_id(),
                Exploration.alternative_episode(eid, i),
                latency,
                [alt],
                None,
                prompt_ids,
                group_id=group_id,
                extra_meta={"exploration_of": eid},
            )
            self._write(turn)
            self.end_episode(turn["episode_id"], call.ctx.tenant, "exploration")

    def failed(
        self,
        ctx: CallContext,
        version: str,
        error: str,
        status: int,
        latency: float,
        up: str,
        stream: bool,
    ) -> None:
        """A call that failed and left no turn: its outcome, for every gateway's error rate."""
        rec = plain(
            FailedCall,
            tenant=ctx.tenant,
            episode_id=ctx.episode.episode_id,
            traceparent=ctx.traceparent,
            version=version,
            error=error,
            status=status,
            latency_ms=latency * 1000.0,
            upstream=up,
            stream=stream,
        )
        self.recorder.record(TOPIC_TURNS, Encoded(rec["episode_id"], orjson.dumps(rec)))

    def end_episode(self, episode_id: str, tenant: str, reason: str) -> None:
        self.recorder.record(TOPIC_TURNS, EpisodeEnd(episode_id=episode_id, tenant=tenant, reason=reason))

    def _write(self, turn: dict[str, Any]) -> None:
        if self.scrub_pii:
            turn = scrub_turn(turn)
        self.recorder.record(TOPIC_TURNS, Encoded(turn["episode_id"], orjson.dumps(turn)))

    def _turn(
        self,
        call: Call,
        turn_id: str,
        episode_id: str,
        latency: float,
        choices: list[Choice],
        usage: dict[str, Any] | None,
        prompt_ids: list[int] | None,
        *,
        ttft: float | None = None,
        error: str | None = None,
        group_id: str | None = None,
        extra_meta: dict[str, Any] | None = None,
        status: int = 200,
    ) -> dict[str, Any]:
        body = call.body
        raw_meta = body.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        if extra_meta:
            meta = {**meta, **extra_meta}
        complete = tokens_complete(prompt_ids, choices)
        return plain(
            Turn,
            id=turn_id,
            tenant=call.ctx.tenant,
            episode_id=episode_id,
            model=self.public_model,
            version=call.route.version,
            upstream=call.replica.url,
            started_at=call.started,
            traceparent=call.ctx.traceparent,
            latency_ms=latency * 1000.0,
            ttft_ms=None if ttft is None else ttft * 1000.0,
            stream=call.stream,
            request={k: v for k, v in body.items() if k != "metadata"},
            sampling=sampling_of(body).model_dump(),
            choices=choices,
            usage=usage,
            prompt_token_ids=prompt_ids if complete else None,
            tokens_recorded=complete,
            task=call.ctx.episode.task,
            metadata=meta,
            group_id=group_id,
            status=status,
            error=error,
        )
