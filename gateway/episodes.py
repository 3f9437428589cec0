"""Which episode a request belongs to, and the task tag it carries."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import Principal
from ledger.ids import new_id
from ledger.tracing import traceparent

MAX_ID_CHARS = 200


@dataclass(frozen=True, slots=True)
class EpisodeRef:
    episode_id: str
    generated: bool  # minted here: the client sent none
    end: bool  # X-Episode-End: true
    task: str | None


def resolve_episode(headers: Any, body: dict[str, Any], bound: Principal | None = None) -> EpisodeRef:
    """The episode a key or a path is bound to, else the X-Episode-Id header, else
    metadata.episode_id, else `user`, else a new UUIDv7."""
    meta = body.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    eid = (
        (bound and bound.episode_id)
        or headers.get("x-episode-id")
        or meta.get("episode_id")
        or body.get("user")
    )
    generated = False
    if not isinstance(eid, str) or not eid.strip():
        eid, generated = new_id(), True
    eid = eid.strip()[:MAX_ID_CHARS]
    end = (headers.get("x-episode-end") or "").strip().lower() in ("1", "true", "yes")
    task = headers.get("x-task") or meta.get("task") or (bound and bound.task)
    return EpisodeRef(eid, generated, end, task if isinstance(task, str) else None)


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who made a call and in which episode; the turn id is minted here, returned as X-Turn-Id.
    `traceparent` is the request's span, taken when the call starts (a stream's turn is
    recorded after the span has ended)."""

    tenant: str
    episode: EpisodeRef
    turn_id: str = field(default_factory=new_id)
    traceparent: str | None = field(default_factory=traceparent)


class TurnIndex:
    """A bounded map turn id -> (episode id, tenant), so feedback may name just a turn."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._map: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._capacity = capacity

    def add(self, turn_id: str, episode_id: str, tenant: str) -> None:
        self._map[turn_id] = (episode_id, tenant)
        if len(self._map) > self._capacity:
            self._map.popitem(last=False)

    def get(self, turn_id: str) -> tuple[str, str] | None:
        return self._map.get(turn_id)
