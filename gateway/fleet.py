"""A gateway joining the fleet at start: its version registry rebuilt from the ledger, and the
feeds that keep it in step with every other gateway (docs/versions.md).

    restore   the versions topic read to its end and folded into the registry, before the
              gateway serves: a restarted gateway serves what it served before it stopped
    feeds     scores and turns (every gateway), versions (a follower, or a controlling gateway
              whose restore failed: it catches up once the bus is back)

The controller judges a canary only once the score and turn feeds have caught up with the
topics, so a restarted controller decides on the same figures as before it stopped.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.feeds import Feed, ScoreFeed, TurnFeed, VersionFeed
from ledger.bus import BusError

log = logging.getLogger(__name__)


def restore_versions(svc: Any) -> bool:
    """Fold the versions topic into the registry; False when the bus could not be read."""
    reg = svc.versions
    try:
        history = reg.log.history()
    except BusError as exc:
        log.warning("versions not restored from the ledger (%s): following the topic instead", exc)
        return False
    applied = reg.restore(history)
    if applied:
        log.info(
            "versions restored from the ledger: %d events; serving %s, canary %s",
            applied,
            reg.serving,
            reg.canary,
        )
    return True


def start_feeds(svc: Any, restored: bool) -> list[Feed]:
    if svc.bus is None:
        return []
    prefix = svc.settings.ledger.topic_prefix
    reg = svc.versions
    feeds: list[Feed] = [ScoreFeed(svc.bus, reg, prefix), TurnFeed(svc.bus, reg, svc.turns.index, prefix)]
    if not svc.settings.versions.control or not restored:
        feeds.append(VersionFeed(svc.bus, reg, prefix))
    reg.fleet_requests = True
    watched = feeds[:2]
    svc.controller.caught_up = lambda: all(f.caught_up.is_set() for f in watched)
    svc.feedback.feed = feeds[1]
    return [f.start() for f in feeds]
