"""Which episode a turn belongs to, for feedback that names only a turn id, on any gateway.

The turn index holds every turn the turns feed has read, whichever gateway served it
(gateway/feeds.py). A turn served a moment ago elsewhere may not have reached this gateway's
feed yet, and a gateway that just started may still be reading the topic: the lookup waits
for the feed then (a turn id is a UUIDv7, so its age is known), and answers None once it
has waited long enough.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from gateway.episodes import TurnIndex

RECENT_S = 60.0  # a turn this young may still be on its way to the feed
WAIT_RECENT_S = 3.0
WAIT_CATCHING_UP_S = 15.0


def minted_at(turn_id: str) -> float | None:
    """The unix time in a UUIDv7 turn id, or None for any other id."""
    try:
        u = uuid.UUID(turn_id)
    except ValueError:
        return None
    return (u.int >> 80) / 1000.0 if u.version == 7 else None


async def episode_of_turn(index: TurnIndex, feed: Any, turn_id: str) -> tuple[str, str] | None:
    """(episode id, tenant) of a turn, or None if it is not known here."""
    known = index.get(turn_id)
    if known is not None or feed is None:
        return known
    at = minted_at(turn_id)
    recent = at is not None and abs(time.time() - at) < RECENT_S
    start = time.monotonic()
    while known is None:
        waited = time.monotonic() - start
        if not (
            (not feed.caught_up.is_set() and waited < WAIT_CATCHING_UP_S)
            or (recent and waited < WAIT_RECENT_S)
        ):
            return None
        await asyncio.sleep(0.05)
        known = index.get(turn_id)
    return known
