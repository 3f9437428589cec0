"""An in-process store with the same reads as `ClickHouseStore`, for unit tests."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence

from ledger.reads import TURNS_GRACE_S, ScoredEpisode, VersionWindow, assemble, turns_pending
from ledger.records import Episode, EpisodeEnd, Feedback, ModelVersion, Record, Score, Turn


class MemoryStore:
    def __init__(self) -> None:
        self._records: dict[str, Record] = {}  # by id: a replay overwrites, never doubles
        self._seq: dict[str, int] = {}  # score id -> insertion order (the read position)
        self._received: dict[str, float] = {}  # score id -> when it was first written
        self._lock = threading.Lock()

    def write(self, records: Sequence[Record], bodies: Sequence[bytes] | None = None) -> None:
        with self._lock:
            for r in records:
                self._records[r.id] = r
                if isinstance(r, Score) and r.id not in self._seq:
                    self._seq[r.id], self._received[r.id] = len(self._seq), time.time()

    def _all(self, tenant: str | None) -> list[Record]:
        with self._lock:
            return [r for r in self._records.values() if tenant is None or r.tenant == tenant]

    def _episode_records(self, tenant: str | None) -> dict[tuple[str, str], list[Record]]:
        """Records by (tenant, episode id): clients choose episode ids, so tenants may share one."""
        out: dict[tuple[str, str], list[Record]] = {}
        for r in self._all(tenant):
            if isinstance(r, Turn | EpisodeEnd | Feedback | Score):
                out.setdefault((r.tenant, r.episode_id), []).append(r)
        return out

    def episode(self, episode_id: str, tenant: str | None = None) -> Episode | None:
        found = [recs for (_, eid), recs in self._episode_records(tenant).items() if eid == episode_id]
        first = min(found, key=lambda recs: min(r.created_at for r in recs), default=[])
        return assemble(episode_id, first)

    def episodes(
        self, since: float | None = None, limit: int = 100, tenant: str | None = None
    ) -> list[Episode]:
        found = []
        for (_, episode_id), recs in self._episode_records(tenant).items():
            turns = [r.created_at for r in recs if isinstance(r, Turn | EpisodeEnd)]
            if turns and (since is None or min(turns) >= since):
                found.append((min(turns), episode_id, recs))
        found.sort(key=lambda f: (f[0], f[1]), reverse=True)
        return [ep for _, eid, recs in found[:limit] if (ep := assemble(eid, recs)) is not None]

    def scored(
        self,
        after: str | None = None,
        *,
        since: float | None = None,
        tenant: str | None = None,
        rubric: str | None = None,
        version: str | None = None,
        limit: int = 1000,
        settle_s: float = 0.0,
        turns_grace_s: float = TURNS_GRACE_S,
    ) -> list[ScoredEpisode]:
        start = -1 if after is None else int(after)
        scores = sorted(
            (
                r
                for r in self._all(tenant)
                if isinstance(r, Score)
                and self._seq[r.id] > start
                and (since is None or r.created_at >= since)
                and (rubric is None or r.rubric == rubric)
                and (version is None or r.version == version)
            ),
            key=lambda s: self._seq[s.id],
        )[:limit]
        by_episode = self._episode_records(tenant)
        out = []
        for s in scores:
            ep = assemble(s.episode_id, by_episode.get((s.tenant, s.episode_id), []))
            if ep is None or not ep.turns:
                if turns_pending(s, self._received[s.id], turns_grace_s):
                    break
                continue
            out.append(ScoredEpisode(f"{self._seq[s.id]:020d}", s, ep))
        return out

    def version_metrics(
        self,
        window_s: int = 60,
        since: float | None = None,
        until: float | None = None,
        versions: Sequence[str] | None = None,
        tenant: str | None = None,
    ) -> list[VersionWindow]:
        w = max(1, int(window_s))
        lat: dict[tuple[str, float], list[float]] = {}
        errs: dict[tuple[str, float], int] = {}
        rew: dict[tuple[str, float], list[float]] = {}
        for r in self._all(tenant):
            if (since is not None and r.created_at < since) or (until is not None and r.created_at >= until):
                continue
            v = r.version if isinstance(r, Turn) else r.version or "" if isinstance(r, Score) else None
            if v is None or (versions is not None and v not in versions):
                continue
            slot = (v, float(int(r.created_at) // w * w))
            if isinstance(r, Turn):
                lat.setdefault(slot, []).append(r.latency_ms)
                errs[slot] = errs.get(slot, 0) + (r.status >= 400 or bool(r.error))
            elif isinstance(r, Score) and r.total is not None:
                rew.setdefault(slot, []).append(r.total)
        out = []
        for slot in sorted(set(lat) | set(rew), key=lambda s: (s[1], s[0])):
            ls, rs = lat.get(slot, []), rew.get(slot, [])
            qs = statistics.quantiles(ls, n=20, method="inclusive") if len(ls) > 1 else ls * 19
            out.append(
                VersionWindow(
                    slot[0],
                    slot[1],
                    len(ls),
                    errs.get(slot, 0),
                    statistics.fmean(ls) if ls else None,
                    statistics.median(ls) if ls else None,
                    qs[18] if ls else None,
                    len(rs),
                    statistics.fmean(rs) if rs else None,
                )
            )
        return out

    def version_events(self, version: str | None = None) -> list[ModelVersion]:
        events = [r for r in self._all(None) if isinstance(r, ModelVersion)]
        return sorted(
            (e for e in events if version is None or e.version == version), key=lambda e: (e.created_at, e.id)
        )

    def counts(self) -> dict[str, int]:
        recs = self._all(None)
        return {
            "turns": sum(isinstance(r, Turn | EpisodeEnd) for r in recs),
            "feedback": sum(isinstance(r, Feedback) for r in recs),
            "scores": sum(isinstance(r, Score) for r in recs),
            "versions": sum(isinstance(r, ModelVersion) for r in recs),
        }

    def close(self) -> None:
        pass
