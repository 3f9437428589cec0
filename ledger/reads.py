"""What the store's reads return, and the `Store` protocol both stores implement.

    episode(id, tenant)       one Episode (turns in order, feedback, scores) or None
    episodes(since, limit)    recent episodes, newest first (rubric backfill, dashboards)
    scored(after, ...)        scored episodes after a position, oldest first (the learner)
    version_metrics(...)      reward / latency / errors per version per time window

Every read takes `tenant`: given, only that tenant's records are visible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger.records import Episode, EpisodeEnd, Feedback, ModelVersion, Record, Score, Turn

log = logging.getLogger(__name__)

TURNS_GRACE_S = 300.0  # how long a score may wait in the store for its episode's turns


def turns_pending(score: Score, received_at: float, grace_s: float) -> bool:
    """A score whose episode has no turns in the store: True while they may still come (the
    read stops there and resumes at it), False once `grace_s` passed (it is skipped)."""
    if time.time() - received_at < grace_s:
        return True
    log.warning(
        "score %s: episode %s (tenant %s) has no turns in the store after %.0f s; skipped",
        score.id,
        score.episode_id,
        score.tenant,
        grace_s,
    )
    return False


@dataclass(frozen=True, slots=True)
class ScoredEpisode:
    """One score with the episode it judged. `position` resumes a read: it orders scores by
    when the store received them (score ids are deterministic, not time-ordered)."""

    position: str
    score: Score
    episode: Episode


@dataclass(frozen=True, slots=True)
class VersionWindow:
    version: str
    start: float  # unix seconds, the window's start
    turns: int
    errors: int
    latency_ms_mean: float | None
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    scored: int
    reward_mean: float | None


class Store(Protocol):
    def write(self, records: Sequence[Record], bodies: Sequence[bytes] | None = None) -> None:
        """Insert records (idempotent by id). `bodies`: their serialised bytes, when at hand."""
        ...

    def episode(self, episode_id: str, tenant: str | None = None) -> Episode | None: ...

    def episodes(
        self, since: float | None = None, limit: int = 100, tenant: str | None = None
    ) -> list[Episode]: ...

    def scored(
        self,
        after: str | None = None,
        *,
        since: float | None = None,
        tenant: str | None = None,
        rubric: str | None = None,
        version: str | None = None,
        limit: int = 1000,
        settle_s: float = 1.0,
        turns_grace_s: float = TURNS_GRACE_S,
    ) -> list[ScoredEpisode]: ...

    def version_metrics(
        self,
        window_s: int = 60,
        since: float | None = None,
        until: float | None = None,
        versions: Sequence[str] | None = None,
        tenant: str | None = None,
    ) -> list[VersionWindow]: ...

    def version_events(self, version: str | None = None) -> list[ModelVersion]: ...

    def counts(self) -> dict[str, int]:
        """Distinct records per table (tests, benchmarks, `rlgw` status lines)."""
        ...

    def close(self) -> None: ...


def assemble(episode_id: str, records: Iterable[Record]) -> Episode | None:
    """Gather one episode's records (any order, duplicates allowed) into an Episode."""
    seen: set[str] = set()
    ep = Episode(episode_id=episode_id)
    found = False
    for rec in sorted(records, key=lambda r: (r.created_at, r.id)):
        if rec.id in seen:
            continue
        seen.add(rec.id)
        found = True
        ep.tenant = rec.tenant
        if isinstance(rec, Turn):
            ep.turns.append(rec)
        elif isinstance(rec, EpisodeEnd):
            ep.ended = True
        elif isinstance(rec, Feedback):
            ep.feedback.append(rec)
            ep.ended = ep.ended or rec.done
        elif isinstance(rec, Score):
            ep.scores.append(rec)
    return ep if found else None
