"""Where authoring tools and the worker read recorded episodes: the store's reads, as a seam.

`EpisodeSource` is the slice of the ledger store (`episode()`, `episodes()`) rewards uses;
`MemoryEpisodes` is its in-package fake, also built from a JSONL file of recorded records
(gathered with `ledger.reads.EpisodeAssembly`: a record given twice counts once).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from ledger.reads import EpisodeAssembly
from ledger.records import Episode, Record, parse_record


class EpisodeSource(Protocol):
    def episode(self, episode_id: str, tenant: str | None = None) -> Episode | None: ...

    def episodes(self, since: float | None = None, limit: int = 100) -> Iterable[Episode]:
        """Episodes whose first turn is at or after `since` (unix seconds), newest first."""
        ...


class MemoryEpisodes:
    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._episodes: dict[str, EpisodeAssembly] = {}
        for r in records:
            self.add(r)

    @classmethod
    def from_jsonl(cls, path: Path) -> MemoryEpisodes:
        with path.open("rb") as f:
            return cls(parse_record(line) for line in f if line.strip())

    def add(self, record: Record) -> None:
        eid = getattr(record, "episode_id", None)
        if eid is None:
            return
        found = self._episodes.get(eid)
        if found is None:
            found = self._episodes[eid] = EpisodeAssembly(eid, record.tenant)
        found.add(record)

    def episode(self, episode_id: str, tenant: str | None = None) -> Episode | None:
        found = self._episodes.get(episode_id)
        ep = found.episode if found is not None else None
        return ep if ep is not None and (tenant is None or ep.tenant == tenant) else None

    def episodes(self, since: float | None = None, limit: int = 100) -> Iterator[Episode]:
        def start(ep: Episode) -> float:
            return ep.turns[0].created_at if ep.turns else 0.0

        eps = sorted(
            (e for e in (f.episode for f in self._episodes.values()) if since is None or start(e) >= since),
            key=start,
            reverse=True,
        )
        return iter(eps[:limit])
