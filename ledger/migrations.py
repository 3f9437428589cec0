"""Numbered, forward-only migrations of the store's schema. Append new ones; never edit old ones.

Every table is a ReplacingMergeTree whose sorting key ends in the record id, and every read
uses FINAL: a record written twice (a replayed batch, a re-sent spool entry) reads once.
`{db}` is replaced by the store's database name. `created_at` holds unix seconds (the record's
own clock); `ts` is the same instant as a DateTime64 for people writing SQL.
"""

from __future__ import annotations

_TS = "ts DateTime64(3, 'UTC') MATERIALIZED fromUnixTimestamp64Milli(toInt64(created_at * 1000), 'UTC')"

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "tables for turns, feedback, scores, versions",
        [
            f"""CREATE TABLE IF NOT EXISTS {{db}}.turns (
                id String, episode_id String, tenant LowCardinality(String),
                kind LowCardinality(String), created_at Float64,
                version LowCardinality(String), model LowCardinality(String), task String,
                latency_ms Float64, status UInt16, error String, group_id String,
                body String CODEC(ZSTD(3)), {_TS}
            ) ENGINE = ReplacingMergeTree ORDER BY (tenant, episode_id, id)""",
            f"""CREATE TABLE IF NOT EXISTS {{db}}.feedback (
                id String, episode_id String, turn_id String, tenant LowCardinality(String),
                created_at Float64, name LowCardinality(String), value Nullable(Float64),
                body String CODEC(ZSTD(3)), {_TS}
            ) ENGINE = ReplacingMergeTree ORDER BY (tenant, episode_id, id)""",
            f"""CREATE TABLE IF NOT EXISTS {{db}}.scores (
                id String, episode_id String, tenant LowCardinality(String), created_at Float64,
                rubric LowCardinality(String), rubric_version String, total Nullable(Float64),
                version LowCardinality(String), task String, feedback_seq UInt32,
                body String CODEC(ZSTD(3)), {_TS}
            ) ENGINE = ReplacingMergeTree ORDER BY (tenant, episode_id, id)""",
            f"""CREATE TABLE IF NOT EXISTS {{db}}.versions (
                id String, version String, created_at Float64, status LowCardinality(String),
                event LowCardinality(String), parent String, body String, {_TS}
            ) ENGINE = ReplacingMergeTree ORDER BY (version, id)""",
        ],
    ),
    (
        2,
        "per-version per-minute rollup of reward, latency and errors",
        [
            # A view over the deduplicated tables (not an insert-time materialized view, which
            # would count a replayed record twice): dashboards query it with plain SQL.
            """CREATE VIEW IF NOT EXISTS {db}.version_minute AS
            SELECT version, minute, sum(n_turns) AS turns, sum(n_errors) AS errors,
                   sum(latency_sum) / nullIf(sum(n_turns), 0) AS latency_ms_mean,
                   sum(n_scored) AS scored, sum(reward_sum) / nullIf(sum(n_scored), 0) AS reward_mean
            FROM (
                SELECT version, toStartOfMinute(ts) AS minute, count() AS n_turns,
                       countIf(status >= 400 OR error != '') AS n_errors, sum(latency_ms) AS latency_sum,
                       toUInt64(0) AS n_scored, 0.0 AS reward_sum
                FROM {db}.turns FINAL WHERE kind = 'turn' GROUP BY version, minute
                UNION ALL
                SELECT version, toStartOfMinute(ts) AS minute, toUInt64(0), toUInt64(0), 0.0,
                       count(), sum(assumeNotNull(total))
                FROM {db}.scores FINAL WHERE total IS NOT NULL GROUP BY version, minute
            )
            GROUP BY version, minute""",
        ],
    ),
    (
        3,
        "scores.inserted_at: the learner resumes reads by insertion order, not by (random) score id",
        [
            "ALTER TABLE {db}.scores ADD COLUMN IF NOT EXISTS "
            "inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)"
        ],
    ),
]
