"""The judges' probe runs as every gateway sees them: the newest `JudgeProbe` per judge (the
scores topic, rewards/judge_watch.py), and the alarms of those that drifted.

A judge alarm is named `judge:<judge>` (e.g. `judge:qa/judge`). It shows as the Prometheus gauge
`rlgw_judge_alarm{judge}` (1: its newest run drifted, 0: it did not) and a row of the dashboard's
alarms; where `versions.block_promotion_on` names it (or `judge:*`, or `*`), no canary is
promoted automatically while it holds, since every reward that judge gives is in doubt
(docs/versions.md). It clears with the judge's next run inside the limit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from ledger.records import JudgeProbe

PREFIX = "judge:"


def blocks(alarm: str, block_promotion_on: list[str]) -> bool:
    """Whether an alarm (a drift metric, or a judge's) keeps a canary from automatic promotion."""
    if "*" in block_promotion_on or alarm in block_promotion_on:
        return True
    return alarm.startswith(PREFIX) and PREFIX + "*" in block_promotion_on


class JudgeAlarms:
    """The newest probe run of each judge, safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest: dict[str, JudgeProbe] = {}

    def observe(self, run: JudgeProbe) -> None:
        with self._lock:
            known = self._newest.get(run.judge)
            if known is None or (run.created_at, run.id) >= (known.created_at, known.id):
                self._newest[run.judge] = run

    def runs(self) -> list[JudgeProbe]:
        with self._lock:
            return sorted(self._newest.values(), key=lambda r: r.judge)

    def active(self) -> dict[str, JudgeProbe]:
        """The alarms that hold: alarm name -> the run that raised it."""
        return {PREFIX + r.judge: r for r in self.runs() if r.drift}

    def rows(self) -> list[dict[str, Any]]:
        """The alarms in the dashboard's shape (gateway/dashboard_data.py)."""
        return [
            {
                "at": r.created_at,
                "version": name,
                "event": "judge_drift",
                "reason": f"{'; '.join(r.drift)} (baseline: {r.baseline_from}, limit {r.max_drift})",
                "figures": {
                    "false_positive_rate": r.false_positive_rate,
                    "control_pass_rate": r.control_pass_rate,
                    "errors": r.errors,
                    "model": r.model,
                },
            }
            for name, r in self.active().items()
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "rlgw_judge_alarm",
            "A judge's newest probe run drifted from its baseline (1: raised)",
            labels=["judge"],
        )
        for r in self.runs():
            g.add_metric([r.judge], 1.0 if r.drift else 0.0)
        yield g
