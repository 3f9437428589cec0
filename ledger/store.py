"""The query store: ClickHouse through clickhouse-connect, one code path for two engines.

    chdb:///abs/path          the embedded engine (chdb) in this process, data in that folder
    http://user:pw@host:8123  a ClickHouse server (production)

chdb runs one engine per process and one process per data path, so embedded stores are
shared per process (`open` twice with the same path gives the same engine; a second path is
refused) and only the process that owns the data dir opens it. Each store lives in its own
database (default `rlgw`), created with the numbered migrations in `ledger.migrations`.

Writes are idempotent: every table is a ReplacingMergeTree keyed by record id, reads use FINAL.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

from ledger.migrations import MIGRATIONS
from ledger.reads import TURNS_GRACE_S, ScoredEpisode, VersionWindow, assemble, turns_pending
from ledger.records import (
    Episode,
    EpisodeEnd,
    Feedback,
    ModelVersion,
    Record,
    RecordError,
    Score,
    Turn,
    parse_record,
)
from ledger.store_client import StoreError, client_for

_TURN_COLS = ["id", "episode_id", "tenant", "kind", "created_at", "version", "model", "task"]
_TURN_COLS += ["latency_ms", "status", "error", "group_id", "body"]
_FEEDBACK_COLS = ["id", "episode_id", "turn_id", "tenant", "created_at", "name", "value", "body"]
_SCORE_COLS = ["id", "episode_id", "tenant", "created_at", "rubric", "rubric_version", "total"]
_SCORE_COLS += ["version", "task", "feedback_seq", "body"]
_VERSION_COLS = ["id", "version", "created_at", "status", "event", "parent", "body"]


def _first_at(ep: Episode) -> float:
    return min((r.created_at for r in [*ep.turns, *ep.feedback, *ep.scores]), default=0.0)


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value) if isinstance(value, int | float) else None


class ClickHouseStore:
    def __init__(self, dsn: str, database: str = "rlgw") -> None:
        if not database.replace("_", "").isalnum():
            raise StoreError(f"bad database name {database!r}")
        self.dsn, self.db = dsn, database
        self._client = client_for(dsn)
        self._lock = threading.Lock()  # one query at a time on the shared client
        self.migrate()

    # -- schema --------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply the migrations this database has not seen; returns their numbers."""
        db = self.db
        self._command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self._command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (number UInt32, name String, "
            "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY number"
        )
        done = {r[0] for r in self._query(f"SELECT number FROM {db}.schema_migrations")}
        applied = []
        for number, name, statements in MIGRATIONS:
            if number in done:
                continue
            for sql in statements:
                self._command(sql.replace("{db}", db))
            self._insert("schema_migrations", [[number, name]], ["number", "name"])
            applied.append(number)
        return applied

    # -- writes --------------------------------------------------------------------------
    def write(self, records: Sequence[Record], bodies: Sequence[bytes] | None = None) -> None:
        turns: list[list[Any]] = []
        feedback: list[list[Any]] = []
        scores: list[list[Any]] = []
        versions: list[list[Any]] = []
        for i, r in enumerate(records):
            body = (bodies[i] if bodies is not None else r.to_bytes()).decode()
            if isinstance(r, Turn):
                turns.append([r.id, r.episode_id, r.tenant, "turn", r.created_at, r.version, r.model])
                turns[-1] += [r.task or "", r.latency_ms, r.status, r.error or "", r.group_id or "", body]
            elif isinstance(r, EpisodeEnd):
                turns.append([r.id, r.episode_id, r.tenant, "episode_end", r.created_at, "", "", ""])
                turns[-1] += [0.0, 0, "", "", body]
            elif isinstance(r, Feedback):
                feedback.append([r.id, r.episode_id, r.turn_id or "", r.tenant, r.created_at, r.name])
                feedback[-1] += [_num(r.value), body]
            elif isinstance(r, Score):
                scores.append([r.id, r.episode_id, r.tenant, r.created_at, r.rubric, r.rubric_version])
                scores[-1] += [r.total, r.version or "", r.task or "", r.feedback_seq, body]
            elif isinstance(r, ModelVersion):
                versions.append([r.id, r.version, r.created_at, r.status, r.event, r.parent or "", body])
        for table, rows, cols in (
            ("turns", turns, _TURN_COLS),
            ("feedback", feedback, _FEEDBACK_COLS),
            ("scores", scores, _SCORE_COLS),
            ("versions", versions, _VERSION_COLS),
        ):
            if rows:
                self._insert(table, rows, cols)

    # -- reads ---------------------------------------------------------------------------
    def episode(self, episode_id: str, tenant: str | None = None) -> Episode | None:
        """With no tenant and an id that several tenants use, the one that used it first."""
        found = self._episodes_by_id([episode_id], tenant)
        return min(found.values(), key=_first_at, default=None)

    def episodes(
        self, since: float | None = None, limit: int = 100, tenant: str | None = None
    ) -> list[Episode]:
        where, params = self._filters(tenant=tenant, since=since)
        rows = self._query(
            f"SELECT tenant, episode_id, min(created_at) AS first FROM {self.db}.turns FINAL {where} "
            "GROUP BY tenant, episode_id ORDER BY first DESC, episode_id DESC LIMIT {limit:UInt32}",
            {**params, "limit": limit},
        )
        keys = [(r[0], r[1]) for r in rows]
        found = self._episodes_by_id(sorted({k[1] for k in keys}), tenant)
        return [found[k] for k in keys if k in found]

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
    ) -> list[ScoredEpisode]:
        """Scores after `after`, in the order the store received them. Only rows older than
        `settle_s` are read (a concurrent writer's insert may land a moment "in the past"), and
        a score whose episode has no turns in the store yet ends the read (its turns may be in
        a later batch) until it is `turns_grace_s` old, then it is skipped with a warning: so a
        reader that resumes from a position skips nothing. One-off reads pass 0 for both."""
        where, params = self._filters(tenant=tenant, since=since, rubric=rubric, version=version)
        conds = [where.removeprefix("WHERE ")] if where else []
        if after:
            at, _, after_id = after.partition(":")
            conds.append("(toUnixTimestamp64Micro(inserted_at), id) > ({after_at:Int64}, {after_id:String})")
            params |= {"after_at": int(at), "after_id": after_id}
        if settle_s > 0:
            conds.append("inserted_at < now64(6) - toIntervalMillisecond({settle_ms:UInt32})")
            params["settle_ms"] = int(settle_s * 1000)
        where = "WHERE " + " AND ".join(conds) if conds else ""
        rows = self._query(
            f"SELECT body, toUnixTimestamp64Micro(inserted_at) FROM {self.db}.scores FINAL "
            f"{where} ORDER BY inserted_at, id LIMIT {{limit:UInt32}}",
            {**params, "limit": limit},
        )
        parsed = [(self._parse(r[0]), int(r[1])) for r in rows]
        scores = [(s, at) for s, at in parsed if isinstance(s, Score)]
        episodes = self._episodes_by_id(sorted({s.episode_id for s, _ in scores}), tenant)
        out = []
        for score, received_us in scores:
            episode = episodes.get((score.tenant, score.episode_id))
            if episode is None or not episode.turns:
                if turns_pending(score, received_us / 1e6, turns_grace_s):
                    break
                continue
            out.append(ScoredEpisode(f"{received_us:020d}:{score.id}", score, episode))
        return out

    def version_metrics(
        self,
        window_s: int = 60,
        since: float | None = None,
        until: float | None = None,
        versions: Sequence[str] | None = None,
        tenant: str | None = None,
    ) -> list[VersionWindow]:
        where, params = self._filters(tenant=tenant, since=since, until=until, versions=versions)
        params["w"] = max(1, int(window_s))
        start = "intDiv(toUInt64(created_at), {w:UInt32}) * {w:UInt32}"
        turn_where = f"{where} {'AND' if where else 'WHERE'} kind = 'turn'"
        turns = self._query(
            f"SELECT version, {start} AS s, count(), countIf(status >= 400 OR error != ''), "
            "avg(latency_ms), quantile(0.5)(latency_ms), quantile(0.95)(latency_ms) "
            f"FROM {self.db}.turns FINAL {turn_where} GROUP BY version, s",
            params,
        )
        score_where = f"{where} {'AND' if where else 'WHERE'} total IS NOT NULL"
        rewards = self._query(
            f"SELECT version, {start} AS s, count(), avg(assumeNotNull(total)) "
            f"FROM {self.db}.scores FINAL {score_where} GROUP BY version, s",
            params,
        )
        out: dict[tuple[str, float], VersionWindow] = {}
        for v, s, n, errs, mean, p50, p95 in turns:
            out[(v, float(s))] = VersionWindow(v, float(s), n, errs, mean, p50, p95, 0, None)
        for v, s, n, mean in rewards:
            w = out.get((v, float(s))) or VersionWindow(v, float(s), 0, 0, None, None, None, 0, None)
            out[(v, float(s))] = dataclasses.replace(w, scored=n, reward_mean=mean)
        return sorted(out.values(), key=lambda w: (w.start, w.version))

    def version_events(self, version: str | None = None) -> list[ModelVersion]:
        where, params = ("WHERE version = {v:String}", {"v": version}) if version else ("", {})
        rows = self._query(
            f"SELECT body FROM {self.db}.versions FINAL {where} ORDER BY created_at, id", params
        )
        return [v for v in (self._parse(r[0]) for r in rows) if isinstance(v, ModelVersion)]

    def counts(self) -> dict[str, int]:
        return {
            t: int(self._query(f"SELECT count() FROM {self.db}.{t} FINAL")[0][0])
            for t in ("turns", "feedback", "scores", "versions")
        }

    def close(self) -> None:
        """Embedded engines stay open for the life of the process (chdb cannot reopen cheaply)."""
        if not self.dsn.startswith("chdb://"):
            self._client.close()

    # -- internals -----------------------------------------------------------------------
    def _episodes_by_id(self, ids: Sequence[str], tenant: str | None) -> dict[tuple[str, str], Episode]:
        """Episodes by (tenant, episode id): clients choose episode ids, so tenants may share one."""
        if not ids:
            return {}
        tenant_sql = " AND tenant = {tenant:String}" if tenant is not None else ""
        params: dict[str, Any] = {"ids": list(ids), "tenant": tenant or ""}
        grouped: dict[tuple[str, str], list[Record]] = {}
        for table in ("turns", "feedback", "scores"):
            rows = self._query(
                f"SELECT tenant, episode_id, body FROM {self.db}.{table} FINAL "
                f"WHERE episode_id IN {{ids:Array(String)}}{tenant_sql}",
                params,
            )
            for row_tenant, episode_id, body in rows:
                rec = self._parse(body)
                if rec is not None:
                    grouped.setdefault((row_tenant, episode_id), []).append(rec)
        out = {}
        for key, recs in grouped.items():
            ep = assemble(key[1], recs)
            if ep is not None:
                out[key] = ep
        return out

    @staticmethod
    def _filters(**given: Any) -> tuple[str, dict[str, Any]]:
        clauses = {
            "tenant": "tenant = {tenant:String}",
            "since": "created_at >= {since:Float64}",
            "until": "created_at < {until:Float64}",
            "after": "id > {after:String}",
            "rubric": "rubric = {rubric:String}",
            "version": "version = {version:String}",
            "versions": "version IN {versions:Array(String)}",
        }
        parts = [clauses[k] for k, v in given.items() if v is not None]
        params = {k: (list(v) if k == "versions" else v) for k, v in given.items() if v is not None}
        return ("WHERE " + " AND ".join(parts) if parts else ""), params

    @staticmethod
    def _parse(body: str | bytes) -> Record | None:
        try:
            return parse_record(body.encode() if isinstance(body, str) else body)
        except RecordError:
            return None

    def _command(self, sql: str) -> None:
        with self._lock:
            self._client.command(sql)

    def _query(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        with self._lock:
            return list(self._client.query(sql, parameters=params or {}).result_rows)

    def _insert(self, table: str, rows: list[list[Any]], cols: list[str]) -> None:
        with self._lock:
            self._client.insert(f"{self.db}.{table}", rows, column_names=cols)
