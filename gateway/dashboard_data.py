"""The dashboard's figures: one JSON snapshot of every version's live state.

Live series come from the registry's in-memory stats (rewards per episode, request outcomes
with timestamps), cut into `bucket_s` buckets over the last `window_s` seconds. Each reward
bucket carries a two-sided normal interval of its mean at the registry's `confidence`. When
a store is configured, its per-version windows fill buckets this gateway has no live rewards
for (after a restart, or traffic served by another gateway), and its scores give the rubric
function breakdown. Store reads are cached for `STORE_TTL_S`: a dashboard polls every 2 s.
Simplified: latency percentiles are nearest-rank over this gateway's successful requests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from typing import Any

from gateway.canary import Arm
from gateway.versions import VersionRegistry
from ledger.training import training_steps, training_summary

log = logging.getLogger(__name__)
STORE_TTL_S = 5.0
DECISIONS = 100
# Version events shown in panels of their own once any exist (their names start with these).
ALARM_EVENTS, EVAL_EVENTS = "alarm", "eval"
RUBRIC_SCORES = 2000


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 4)


class StoreFigures:
    """Per-version windows and rubric breakdown from the store, cached briefly."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._cache: dict[tuple[int, int], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def read(self, since: float, bucket_s: int, window_s: int) -> dict[str, Any]:
        key = (window_s, bucket_s)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < STORE_TTL_S:
                return hit[1]
            out: dict[str, Any] = {"windows": [], "rubric": [], "error": None, "newest_turn": None}
            try:
                if hasattr(self.store, "version_metrics"):
                    out["windows"] = self.store.version_metrics(window_s=bucket_s, since=since)
                if hasattr(self.store, "scored"):
                    out["rubric"] = rubric_breakdown(
                        self.store.scored(since=since, limit=RUBRIC_SCORES, settle_s=0, turns_grace_s=0)
                    )
                if hasattr(self.store, "episodes"):
                    newest = self.store.episodes(limit=1)
                    turns = [t.created_at for ep in newest for t in ep.turns]
                    out["newest_turn"] = max(turns) if turns else None
            except Exception as exc:  # the store being down must not take the dashboard down
                log.warning("dashboard: store read failed: %s", exc)
                out["error"] = f"{type(exc).__name__}: {exc}"
            self._cache[key] = (time.monotonic(), out)
            return out


def rubric_breakdown(scored: list[Any]) -> list[dict[str, Any]]:
    """Mean value per (version, rubric, reward function) over scores that carry values."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    errors: dict[tuple[str, str, str], int] = defaultdict(int)
    weights: dict[tuple[str, str, str], float] = {}
    for item in scored:
        s = item.score
        for fn, value in s.values.items():
            key = (s.version or "?", s.rubric, fn)
            weights[key] = s.weights.get(fn, weights.get(key, 0.0))
            if value is None:
                errors[key] += 1
            else:
                values[key].append(value)
        for fn in s.errors:
            if fn not in s.values:
                errors[(s.version or "?", s.rubric, fn)] += 1
    rows = []
    for key in sorted(set(values) | set(errors)):
        vs = values.get(key, [])
        rows.append(
            {
                "version": key[0],
                "rubric": key[1],
                "function": key[2],
                "weight": weights.get(key, 0.0),
                "n": len(vs),
                "mean": _num(sum(vs) / len(vs)) if vs else None,
                "errors": errors.get(key, 0),
            }
        )
    return rows


def snapshot(
    reg: VersionRegistry,
    recorder: Any,
    store: StoreFigures | None,
    *,
    window_s: int = 900,
    bucket_s: int = 30,
    now: float | None = None,
) -> dict[str, Any]:
    now = time.time() if now is None else now
    start = math.floor((now - window_s) / bucket_s) * bucket_s
    n_buckets = math.ceil((now - start) / bucket_s)
    buckets = [start + i * bucket_s for i in range(n_buckets)]
    conf = reg.cfg.confidence
    stored = store.read(start, bucket_s, window_s) if store is not None else None
    store_reward = {
        (w.version, w.start): (w.reward_mean, w.scored)
        for w in (stored["windows"] if stored else [])
        if w.reward_mean is not None
    }

    def slot(at: float) -> int | None:
        i = int((at - start) // bucket_s)
        return i if 0 <= i < n_buckets else None

    listing = {row["id"]: row for row in reg.listing()}
    total_requests = 0
    versions, last_request = [], None
    for vid, row in listing.items():
        rewards: list[list[float]] = [[] for _ in buckets]
        for at, r in reg.stats.rewards_of(vid):
            if (i := slot(at)) is not None:
                rewards[i].append(r)
        reqs, errs = [0] * n_buckets, [0] * n_buckets
        latencies: list[float] = []
        for at, ok, ms in reg.stats.requests_of(vid):
            last_request = at if last_request is None else max(last_request, at)
            if (i := slot(at)) is None:
                continue
            reqs[i] += 1
            errs[i] += not ok
            if ok:
                latencies.append(ms)
        latencies.sort()
        series = []
        for t, rs in zip(buckets, rewards, strict=True):
            if rs:
                low, high = Arm(tuple(rs)).interval(conf)
                point = {"t": t, "n": len(rs), "mean": _num(sum(rs) / len(rs)), "source": "live"}
                series.append(point | {"low": _num(low), "high": _num(high)})
            elif (vid, float(t)) in store_reward:
                mean, n = store_reward[(vid, float(t))]
                series.append(
                    {"t": t, "n": n, "mean": _num(mean), "low": None, "high": None, "source": "store"}
                )
        total_requests += sum(reqs)
        versions.append(
            {
                **{k: row[k] for k in ("id", "parent", "status", "pinned", "share", "canary_since")},
                "episodes": row["episodes"],
                "reward": row["reward"],
                "reward_interval": row["reward_interval"],
                "requests": sum(reqs),
                "errors": sum(errs),
                "error_rate": round(sum(errs) / sum(reqs), 4) if sum(reqs) else 0.0,
                "latency_p50_ms": _num(percentile(latencies, 0.50)),
                "latency_p99_ms": _num(percentile(latencies, 0.99)),
                "reward_series": series,
                "requests_series": reqs,
                "errors_series": errs,
            }
        )
    for v in versions:
        v["traffic_share"] = round(v["requests"] / total_requests, 4) if total_requests else 0.0

    spool = getattr(recorder, "_spool", None)  # the recorder exposes no public spool handle
    newest_turn = stored["newest_turn"] if stored else None
    lag = (
        None
        if newest_turn is None or last_request is None
        else round(max(0.0, last_request - newest_turn), 3)
    )
    return {
        "now": now,
        "window_s": window_s,
        "bucket_s": bucket_s,
        "buckets": buckets,
        "confidence": conf,
        "serving": reg.serving,
        "canary": reg.canary,
        "canary_share": reg.cfg.canary_share,
        "versions": versions,
        "decisions": [
            {
                "at": e.created_at,
                "version": e.version,
                "event": e.event,
                "status": e.status,
                "reason": e.reason,
                "figures": e.figures,
            }
            for e in reversed(reg.events[-DECISIONS:])
        ],
        "rubric": stored["rubric"] if stored else [],
        "learner": learner_rows(reg),
        "alarms": held_back(reg) + reg.judges.rows() + events_named(reg, ALARM_EVENTS),
        "evals": events_named(reg, EVAL_EVENTS),
        "ledger": {
            "recorder_pending": recorder.pending,
            "published": getattr(recorder, "published", None),
            "spilled": getattr(recorder, "spilled", None),
            "spool_records": spool.records if spool is not None else 0,
            "spool_bytes": spool.size_bytes if spool is not None else 0,
            "store": "none" if store is None else ("error" if stored and stored["error"] else "ok"),
            "store_error": stored["error"] if stored else None,
            "store_lag_s": lag,
        },
    }


def learner_rows(reg: VersionRegistry) -> list[dict[str, Any]]:
    """Each version that carries the learner's figures (ledger/training.py): its summary and its
    steps, oldest version first."""
    rows = []
    for v in list(reg.versions.values()):
        summary = training_summary(v.data_window)
        if summary:
            rows.append(
                {
                    "version": v.id,
                    "status": v.status,
                    "summary": summary,
                    "steps": training_steps(v.data_window),
                }
            )
    return rows


def held_back(reg: VersionRegistry) -> list[dict[str, Any]]:
    """Versions the learner trained but did not publish (a guard held them back): the next
    published version's data window names them (`held_back`: version, reason, figures)."""
    out = []
    for v in list(reg.versions.values()):
        for h in (v.data_window or {}).get("held_back") or []:
            if not isinstance(h, dict) or not h.get("version"):
                continue
            training = h.get("training")
            training = training if isinstance(training, dict) else {}
            out.append(
                {
                    "at": v.created_at,
                    "version": h["version"],
                    "event": "held_back",
                    "reason": f"{h.get('reason', '')} (its data went into {v.id})",
                    "figures": {k: training.get(k) for k in ("kl_base", "entropy", "entropy_base")},
                }
            )
    return out


def events_named(reg: VersionRegistry, prefix: str) -> list[dict[str, Any]]:
    """The newest version events whose name starts with `prefix` (alarms, eval-gate results)."""
    found = [e for e in reg.events[-10 * DECISIONS :] if e.event.startswith(prefix)][-DECISIONS:]
    return [
        {
            "at": e.created_at,
            "version": e.version,
            "event": e.event,
            "reason": e.reason,
            "figures": eval_figures(e.figures) if e.event.startswith(EVAL_EVENTS) else e.figures,
        }
        for e in reversed(found)
    ]


def eval_figures(report: dict[str, Any]) -> dict[str, Any]:
    """An eval-gate report (rewards/eval_report.py) in brief: each rubric's reward, parent →
    version with the interval of the difference, and the prompts it was measured on."""
    if "rows" not in report:
        return report
    out: dict[str, Any] = {k: report[k] for k in ("verdict", "prompts", "seconds") if k in report}
    for r in report.get("rows") or []:
        if r.get("metric") == "reward" and r.get("low") is not None:
            interval = f"[{r['low']:+.3f}, {r['high']:+.3f}]"
            out[r["rubric"]] = f"{r['parent']:.3f} → {r['version']:.3f} {interval} n={r['n']}"
    return out
