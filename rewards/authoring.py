"""Tools for rubric authors: dry-run rubrics on recorded episodes, and backfill stored history."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ledger.bus import Bus
from ledger.records import TOPIC_SCORES, Episode, Score
from rewards.rubric import Rubric
from rewards.source import EpisodeSource
from rewards.view import EpisodeView


async def dry_run(
    rubrics: Sequence[Rubric], episodes: Iterable[Episode]
) -> list[tuple[Episode, list[Score]]]:
    """Score each episode with every matching rubric; nothing is published."""
    out = []
    for ep in episodes:
        view = EpisodeView.of(ep)
        out.append((ep, [await r.score(view) for r in rubrics if r.matches(view)]))
    return out


async def backfill(
    rubric: Rubric,
    source: EpisodeSource,
    bus: Bus,
    *,
    topic_prefix: str = "",
    since: float | None = None,
    limit: int = 1_000_000,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Re-score stored episodes with `rubric` (its current version) and publish the Scores.

    Score ids are deterministic, so running a backfill twice publishes the same ids again.
    Returns the number of Scores published; `progress(n)` is called with episodes done so far.
    """
    published = 0
    pending: list[Score] = []
    for done, ep in enumerate(source.episodes(since=since, limit=limit), start=1):
        view = EpisodeView.of(ep)
        if ep.turns and rubric.matches(view):
            pending.append(await rubric.score(view))
        if len(pending) >= batch:
            published += _publish(bus, topic_prefix, pending)
        if progress is not None:
            progress(done)
    return published + _publish(bus, topic_prefix, pending)


def _publish(bus: Bus, prefix: str, scores: list[Score]) -> int:
    n = len(scores)
    if scores:
        bus.publish(prefix + TOPIC_SCORES, [(s.episode_id, s.to_bytes()) for s in scores])
        scores.clear()
    return n
