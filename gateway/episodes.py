"""Which episode a request belongs to, and the task tag it carries.

A client names its episode (X-Episode-Id, `metadata.episode_id` or `user`); the id comes back
as the X-Episode-Id response header and keys the episode's records. So it is checked at the
door: visible ASCII (spaces inside allowed), at most MAX_ID_CHARS, else a 400 naming the field.
It is never truncated or rewritten, which would merge two clients' episodes into one.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import Principal
from gateway.errors import InvalidRequest
from ledger.ids import new_id
from ledger.tracing import traceparent

MAX_ID_CHARS = 200
_ID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")  # header-safe, no edge blanks


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
    sources = (
        ("episode", bound and bound.episode_id),  # a key or a path bound to an episode
        ("X-Episode-Id", headers.get("x-episode-id")),
        ("metadata.episode_id", meta.get("episode_id")),
    )
    param, eid = next(((p, v) for p, v in sources if v), ("user", body.get("user")))
    generated = False
    if not isinstance(eid, str) or not eid.strip():
        eid, generated = new_id(), True
    check_id(eid, param)
    end = (headers.get("x-episode-end") or "").strip().lower() in ("1", "true", "yes")
    task = headers.get("x-task") or meta.get("task") or (bound and bound.task)
    return EpisodeRef(eid, generated, end, task if isinstance(task, str) else None)


def check_id(value: str, param: str) -> None:
    """A client-chosen id that will be sent back as a header value, or a 400 naming `param`."""
    if len(value) > MAX_ID_CHARS:
        raise InvalidRequest(
            f"{param} is {len(value)} characters long; the limit is {MAX_ID_CHARS}",
            param=param,
            code="invalid_episode_id",
        )
    if _ID.fullmatch(value) is None:
        raise InvalidRequest(
            f"{param} must be printable ASCII (letters, digits, punctuation, inner spaces), "
            "without control characters or surrounding blanks",
            param=param,
            code="invalid_episode_id",
        )


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
