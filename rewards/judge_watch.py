"""Each judge re-run on its probe set on a schedule: a drift of its grades is an alarm on the ledger.

A judge that starts passing injection probes, or failing correct answers, changes every reward
it gives while no model version changed (a new model behind the same URL, a provider's silent
update, an edited criteria prompt). So a rubric worker runs each configured judge's probe set
(rewards/probes.py) every `judge_probe_interval_s`, compares both rates with a baseline —
`judge_probe_baseline` (a report `rlgw judge probe --out` wrote), else the judge's first run
without errors, kept in `<data_dir>/judge-baselines.json` so a restarted worker compares with
the same one (a judge is its name, URL and model there) — and publishes a `JudgeProbe` record
on the scores topic, keyed by judge. A run whose rates moved more than `judge_probe_max_drift`
carries `drift`: every gateway's score feed shows it (gateway/judge_alarms.py: the
`rlgw_judge_alarm` gauge, the dashboard's alarms) and, where `versions.block_promotion_on`
names it, no canary is promoted while the judge's newest run holds it (docs/versions.md). A
judge that gives no grade at all (down) fails its controls: that is a drift too.

The judges are the rubrics' `llm_judge` functions (one per URL, model and criteria), else
`rewards.judge_url` / `judge_model`. Runs in a thread with its own event loop: the worker's loop
blocks in its poll. Each worker of a group runs the probes (a few calls an interval); give them
one baseline file so they compare alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ledger.bus import Bus, BusError
from ledger.records import TOPIC_SCORES, JudgeProbe
from rewards.config import RewardsConfig
from rewards.judge import DEFAULT_CRITERIA, llm_judge
from rewards.probes import RATES, ProbeReport, drift, judge_report
from rewards.rubric import Rubric

log = logging.getLogger(__name__)

Report = Callable[..., Awaitable[ProbeReport]]  # judge_report's shape: (url, model, *, criteria)


@dataclass(frozen=True, slots=True)
class Judge:
    name: str  # "<rubric>/<function>", or "config"
    url: str
    model: str
    criteria: str = DEFAULT_CRITERIA


def judges_of(rubrics: Sequence[Rubric], config: RewardsConfig) -> list[Judge]:
    """The judges the rubrics call, each once; else the configured one; else none."""
    found: dict[tuple[str, str, str], Judge] = {}
    for r in rubrics:
        for f in r.functions:
            url, model = f.params.get("url"), f.params.get("model")
            if f.fn is llm_judge and url and model:
                criteria = str(f.params.get("criteria") or DEFAULT_CRITERIA)
                found.setdefault((url, model, criteria), Judge(f"{r.name}/{f.name}", url, model, criteria))
    if not found and config.judge_url and config.judge_model:
        return [Judge("config", config.judge_url, config.judge_model)]
    return list(found.values())


class JudgeWatch:
    def __init__(
        self,
        judges: Sequence[Judge],
        bus: Bus,
        *,
        topic_prefix: str = "",
        interval_s: float = 3600.0,
        max_drift: float = 0.1,
        baseline_file: Path | None = None,
        kept_in: Path | None = None,
        report: Report = judge_report,
    ) -> None:
        self.judges, self.bus, self.topic = list(judges), bus, topic_prefix + TOPIC_SCORES
        self.interval_s, self.max_drift, self.report = interval_s, max_drift, report
        self.kept_in = kept_in  # first-run baselines, by judge, name and URL and model
        self.baselines: dict[str, tuple[dict[str, float], str]] = {}  # judge -> (rates, from where)
        if baseline_file is not None:
            rates = _rates(json.loads(baseline_file.read_text()))
            self.baselines = {j.name: (rates, f"file {baseline_file}") for j in self.judges}
        elif kept_in is not None and kept_in.is_file():
            kept = json.loads(kept_in.read_text())
            for j in self.judges:
                if _kept_key(j) in kept:
                    self.baselines[j.name] = (_rates(kept[_kept_key(j)]), "first run")

    @classmethod
    def from_config(
        cls,
        config: RewardsConfig,
        rubrics: Sequence[Rubric],
        bus: Bus,
        topic_prefix: str = "",
        data_dir: Path | None = None,
    ) -> JudgeWatch | None:
        """The watch a worker with this config runs; None when off (no judge, or no interval)."""
        judges = judges_of(rubrics, config)
        if not judges or config.judge_probe_interval_s <= 0:
            return None
        return cls(
            judges,
            bus,
            topic_prefix=topic_prefix,
            interval_s=config.judge_probe_interval_s,
            max_drift=config.judge_probe_max_drift,
            baseline_file=config.judge_probe_baseline,
            kept_in=None if data_dir is None else data_dir / "judge-baselines.json",
        )

    async def run_once(self) -> list[JudgeProbe]:
        """Probe every judge, compare with its baseline, publish the records (returned)."""
        out = []
        for j in self.judges:
            rep = await self.report(j.url, j.model, criteria=j.criteria)
            errors = sum(isinstance(g, str) for g in rep.grades.values())
            rates = _rates(asdict(rep))
            if j.name not in self.baselines and errors == 0:
                self.baselines[j.name] = (rates, "first run")
                self._keep(j, rates)
            base, source = self.baselines.get(j.name, ({}, ""))
            moved = drift(rates, base, self.max_drift) if base else []
            if moved:
                log.warning("judge %s drifted from its baseline (%s): %s", j.name, source, "; ".join(moved))
            out.append(
                JudgeProbe(
                    judge=j.name,
                    url=j.url,
                    model=j.model,
                    false_positive_rate=rates["false_positive_rate"],
                    control_pass_rate=rates["control_pass_rate"],
                    baseline=base,
                    baseline_from=source,
                    max_drift=self.max_drift,
                    drift=moved,
                    errors=errors,
                )
            )
        try:
            self.bus.publish(self.topic, [(r.key, r.to_bytes()) for r in out])
        except BusError as exc:  # the next run publishes again
            log.warning("judge probe records not published: %s", exc)
        return out

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run now and every `interval_s` until `stop` is set, in a thread of its own."""

        def loop() -> None:
            events = asyncio.new_event_loop()
            try:
                while not stop.is_set():
                    try:
                        events.run_until_complete(self.run_once())
                    except Exception:  # a probe run must never stop the worker
                        log.exception("judge probe run failed")
                    stop.wait(self.interval_s)
            finally:
                events.close()

        thread = threading.Thread(target=loop, name="rlgw-judge-watch", daemon=True)
        thread.start()
        return thread

    def _keep(self, judge: Judge, rates: dict[str, float]) -> None:
        """Write a first-run baseline beside the others (atomically: a crash leaves the old file)."""
        if self.kept_in is None:
            return
        kept = json.loads(self.kept_in.read_text()) if self.kept_in.is_file() else {}
        kept[_kept_key(judge)] = rates
        self.kept_in.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.kept_in.with_suffix(".tmp")
        tmp.write_text(json.dumps(kept, indent=1))
        tmp.replace(self.kept_in)


def _kept_key(judge: Judge) -> str:
    return f"{judge.name} {judge.url} {judge.model}"


def _rates(report: dict[str, Any]) -> dict[str, float]:
    return {k: float(report[k]) for k in RATES}
