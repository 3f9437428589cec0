"""Conversation state for the Responses API's `previous_response_id`, kept in the ledger.

A response is one recorded turn: its request (the translated chat messages) and its first
choice's message are exactly what a continuation needs, so no record of its own is written.
The response id names the turn and its episode (`resp_<turn id>.<episode id, base64url>`), so any
gateway finds it with the store's episode read; this process keeps the recent ones in memory too
(the store is written a little after the reply, through the bus). See docs/front-doors.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.records import Episode

PREFIX = "resp_"
DOOR_KEY = "rlgw_door"  # the turn's metadata entry that says what a front door adds


class EpisodeReader(Protocol):
    def episode(self, episode_id: str, tenant: str | None = None) -> Episode | None: ...


@dataclass(frozen=True, slots=True)
class Stored:
    """A response as a continuation sees it."""

    response_id: str
    tenant: str
    episode_id: str
    messages: list[dict[str, Any]]  # the chat messages it was asked, its instructions first
    instructions: int  # how many leading messages came from `instructions` (not carried on)
    reply: dict[str, Any]  # the assistant message it answered
    store: bool


def response_id(turn_id: str, episode_id: str) -> str:
    return PREFIX + turn_id + "." + base64.urlsafe_b64encode(episode_id.encode()).decode().rstrip("=")


def parse_response_id(rid: str) -> tuple[str, str] | None:
    """(turn id, episode id), or None when `rid` is not one of ours."""
    if not rid.startswith(PREFIX) or "." not in rid:
        return None
    turn_id, _, enc = rid[len(PREFIX) :].partition(".")
    try:
        episode_id = base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (turn_id, episode_id) if turn_id and episode_id else None


class Conversations:
    def __init__(
        self, store: EpisodeReader | None, *, capacity_chars: int = 64_000_000, wait_s: float = 3.0
    ) -> None:
        self.store = store
        self.wait_s = wait_s  # how long a lookup waits for the store to catch up with the bus
        self._recent: OrderedDict[str, tuple[Stored, int]] = OrderedDict()
        self._capacity, self._chars = capacity_chars, 0  # bounded by the text it holds

    def remember(self, stored: Stored) -> None:
        size = sum(len(str(m.get("content") or "")) + 64 for m in stored.messages) + 64
        old = self._recent.pop(stored.response_id, None)
        self._chars += size - (old[1] if old else 0)
        self._recent[stored.response_id] = (stored, size)
        while self._chars > self._capacity and len(self._recent) > 1:
            self._chars -= self._recent.popitem(last=False)[1][1]

    async def get(self, rid: str, tenant: str) -> Stored | None:
        """The stored response `rid` of this tenant, or None (unknown, another tenant's, or
        created with `store: false`)."""
        kept = self._recent.get(rid)
        hit = kept[0] if kept is not None else await self._read(rid, tenant)
        if hit is None or hit.tenant != tenant or not hit.store:
            return None
        return hit

    async def _read(self, rid: str, tenant: str) -> Stored | None:
        ids = parse_response_id(rid)
        if ids is None or self.store is None:
            return None
        turn_id, episode_id = ids
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while True:
            episode = await asyncio.to_thread(self.store.episode, episode_id, tenant)
            found = _from_episode(rid, turn_id, episode) if episode is not None else None
            if found is not None or loop.time() >= deadline:
                return found
            await asyncio.sleep(0.2)


def _from_episode(rid: str, turn_id: str, episode: Episode) -> Stored | None:
    turn = next((t for t in episode.turns if t.id == turn_id), None)
    if turn is None or not turn.choices:
        return None
    door = turn.metadata.get(DOOR_KEY)
    door = door if isinstance(door, dict) else {}
    messages = turn.request.get("messages")
    return Stored(
        response_id=rid,
        tenant=turn.tenant,
        episode_id=turn.episode_id,
        messages=messages if isinstance(messages, list) else [],
        instructions=int(door.get("instructions") or 0),
        reply=turn.choices[0].message,
        store=bool(door.get("store", True)),
    )
