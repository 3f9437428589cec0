"""What the store's reads return, and the `Store` protocol both stores implement.

    episode(id, tenant)       one Episode (turns in order, feedback, scores) or None
    episodes(since, limit)    recent episodes, newest first (rubric backfill, dashboards)
    scored(after, ...)        scored episodes after a position, oldest first (the learner)
    version_metrics(...)      reward / latency / errors per version per time window

Every read takes `tenant`: given, only that tenant's records are visible.

`ScoredReads` is the one read the learner needs (`scored(after, limit=...)`): every `Store` has
it, and `MemoryScoredEpisodes` is its in-memory fake for tests and drills. `EpisodeAssembly`
is the one way records become an `Episode` (the stores, the rubric worker and rewards' sources
all gather episodes with it): in arrival order, duplicates dropped by record id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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


class ScoredReads(Protocol):
    def scored(self, after: str | None = None, *, limit: int = 1000) -> Sequence[ScoredEpisode]:
        """Up to `limit` scored episodes after position `after` (None: from the start), oldest first."""
        ...


class MemoryScoredEpisodes:
    """Scored episodes in memory, in arrival order; a position is the item's index, zero-padded."""

    def __init__(self) -> None:
        self.items: list[ScoredEpisode] = []
        self._lock = threading.Lock()

    def add(self, score: Score, episode: Episode) -> str:
        with self._lock:
            pos = f"{len(self.items):012d}"
            self.items.append(ScoredEpisode(pos, score, episode))
            return pos

    def scored(self, after: str | None = None, *, limit: int = 1000) -> list[ScoredEpisode]:
        start = 0 if after is None else int(after) + 1
        with self._lock:
            return self.items[start : start + limit]


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


class EpisodeAssembly:
    """One episode gathered from its records as they come: turns, feedback and scores in the
    order added, a record seen before (same id) dropped; an EpisodeEnd, or feedback with
    `done`, ends it. `turn` may reshape each turn as it is added (the rubric worker slims them)."""

    __slots__ = ("episode", "seen", "turn")

    def __init__(
        self, episode_id: str, tenant: str = "default", turn: Callable[[Turn], Turn] | None = None
    ) -> None:
        self.episode = Episode(episode_id=episode_id, tenant=tenant)
        self.seen: set[str] = set()
        self.turn = turn

    def add(self, rec: Record) -> bool:
        """Add one record; False when it was seen before (nothing changes)."""
        if rec.id in self.seen:
            return False
        self.seen.add(rec.id)
        ep = self.episode
        ep.tenant = rec.tenant
        if isinstance(rec, Turn):
            ep.turns.append(self.turn(rec) if self.turn is not None else rec)
        elif isinstance(rec, EpisodeEnd):
            ep.ended = True
        elif isinstance(rec, Feedback):
            ep.feedback.append(rec)
            ep.ended = ep.ended or rec.done
        elif isinstance(rec, Score):
            ep.scores.append(rec)
        return True


def assemble(episode_id: str, records: Iterable[Record]) -> Episode | None:
    """Gather one episode's records (any order, duplicates allowed) into an Episode."""
    found = EpisodeAssembly(episode_id)
    for rec in sorted(records, key=lambda r: (r.created_at, r.id)):
        found.add(rec)
    return found.episode if found.seen else None
