"""The rubric worker: consume turns and feedback as a consumer group, score closed episodes.

One step: poll → apply records to per-episode state → close idle episodes → score every episode
that is due with every matching rubric → publish the Scores (key = episode id) → commit.

Delivery is at-least-once and scoring is idempotent: a Score's id is derived from (episode,
rubric name and version, feedback count, turn count), so a replay republishes the same ids.
With a tracer, each Score gets a `rubric.score` span linked to its turns' request spans, and
carries the span's trace context (ledger.tracing).

Offsets are committed only after the step's scores are published, and only when no episode
is open in memory, or at the latest every `commit_interval_s`: records of an episode still open
at a crash are then replayed to whichever worker takes the partition. Past that bound, an
episode seen only by its end or feedback is rebuilt from the store when the worker has one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from opentelemetry.trace import Tracer

from ledger.bus import Bus, BusUnavailable
from ledger.records import (
    TOPIC_FEEDBACK,
    TOPIC_SCORES,
    TOPIC_TURNS,
    EpisodeEnd,
    RecordError,
    Score,
    parse_record,
)
from ledger.tracing import links, traceparent
from rewards.config import RewardsSettings
from rewards.judge_watch import JudgeWatch
from rewards.metrics import WorkerMetrics
from rewards.rubric import SCORE_NAMESPACE, Rubric
from rewards.source import EpisodeSource
from rewards.state import EpisodeBook, EpisodeKey, EpisodeState
from rewards.view import EpisodeView

log = logging.getLogger(__name__)


class RubricWorker:
    def __init__(
        self,
        rubrics: Sequence[Rubric],
        bus: Bus,
        *,
        topic_prefix: str = "",
        group: str = "rlgw-rubrics",
        idle_timeout_s: float = 300.0,
        keep_scored_s: float = 3600.0,
        commit_interval_s: float = 30.0,
        source: EpisodeSource | None = None,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        batch: int = 2000,
        tracer: Tracer | None = None,
    ) -> None:
        self.rubrics = list(rubrics)
        self.bus = bus
        self.prefix = topic_prefix
        self.consumer = bus.consumer([topic_prefix + TOPIC_TURNS, topic_prefix + TOPIC_FEEDBACK], group)
        self.book = EpisodeBook()
        self.idle_timeout_s = idle_timeout_s
        self.keep_scored_s = keep_scored_s
        self.commit_interval_s = commit_interval_s
        self.source = source
        self.metrics = metrics
        self.clock = clock
        self.batch = batch
        self.tracer = tracer
        self.pending: dict[EpisodeKey, EpisodeState] = {}  # due, not yet published
        self.published = 0
        self._last_commit = clock()
        self._last_forget = clock()

    @classmethod
    def from_settings(
        cls, settings: RewardsSettings, rubrics: Sequence[Rubric], bus: Bus, **kw: object
    ) -> RubricWorker:
        cfg = settings.rewards
        return cls(
            rubrics,
            bus,
            topic_prefix=settings.ledger.topic_prefix,
            group=cfg.group,
            idle_timeout_s=cfg.idle_timeout_s,
            keep_scored_s=cfg.keep_scored_s,
            commit_interval_s=cfg.commit_interval_s,
            **kw,  # type: ignore[arg-type]
        )

    async def step(self, timeout_s: float = 0.5) -> int:
        """One poll-score-publish-commit round; returns the number of Scores published."""
        # polled on this thread: consumers (kafka-python's included) are not thread-safe, and
        # nothing else runs on this loop between steps
        messages = self.consumer.poll(self.batch, timeout_s)
        now = self.clock()
        for msg in messages:
            try:
                record = parse_record(msg.value)
            except RecordError as exc:
                log.warning(
                    "skipping a bad record at %s/%d@%d: %s", msg.topic, msg.partition, msg.offset, exc
                )
                if self.metrics:
                    self.metrics.bad_records.inc()
                continue
            st = self.book.apply(record, now, msg.value)
            if st is not None and (st.due or (not st.turns and not st.recovered)):
                self.pending[st.key] = st
        ends = self.book.idle(now, self.idle_timeout_s)
        for st in ends:
            self.pending[st.key] = st
        self._recover([st for st in self.pending.values() if not st.turns])
        due = [st for st in self.pending.values() if st.due]
        scores = await self._score(due)
        try:
            if ends:
                self.bus.publish(self.prefix + TOPIC_TURNS, [_idle_end(st) for st in ends])
            if scores:
                self.bus.publish(self.prefix + TOPIC_SCORES, [(s.episode_id, s.to_bytes()) for s in scores])
        except BusUnavailable as exc:
            log.warning("cannot publish %d scores yet: %s", len(scores), exc)
            return 0
        rescored = {st.key for st in due if st.scored is not None}
        for st in due:
            st.scored = st.signature
            st.pack()
        if self.metrics:
            for s in scores:
                self.metrics.scores.labels(s.rubric).inc()
                if (s.tenant, s.episode_id) in rescored:
                    self.metrics.rescores.labels(s.rubric).inc()
        self.pending = {k: st for k, st in self.pending.items() if st.due}
        self.published += len(scores)
        self._maybe_commit(now)
        return len(scores)

    def _recover(self, states: list[EpisodeState]) -> None:
        """Episodes seen only by their end or feedback (their turns went to a worker that died,
        or were forgotten): take the turns from the store, once."""
        for st in states:
            if self.source is None or st.recovered:
                continue
            st.recovered = True
            stored = self.source.episode(st.episode_id, st.tenant)
            if stored is None:
                continue
            closed = st.closed or stored.ended
            for rec in [*stored.turns, *stored.feedback]:
                self.book.apply(rec, st.touched)
            st.closed = closed

    async def _score(self, due: list[EpisodeState]) -> list[Score]:
        jobs: list[Coroutine[Any, Any, Score]] = []
        out: list[Score] = []
        for st in due:
            view = EpisodeView.of(st.episode)
            for r in self.rubrics:
                if not r.matches(view):
                    continue
                if self.tracer is not None:
                    jobs.append(self._traced(r, view, self.tracer))
                elif r.inline_only:  # built-ins: awaiting directly costs no task
                    out.append(await r.score(view, self.metrics))
                else:
                    jobs.append(r.score(view, self.metrics))
        for i in range(0, len(jobs), 512):  # bounded concurrency for slow (judge) functions
            out.extend(await asyncio.gather(*jobs[i : i + 512]))
        return out

    async def _traced(self, rubric: Rubric, view: EpisodeView, tracer: Tracer) -> Score:
        """Score in a span linked to the request spans of the episode's turns."""
        turns = [(t.traceparent, {"rlgw.turn_id": t.id}) for t in view.turns]
        with tracer.start_as_current_span("rubric.score", links=links(turns)) as span:
            score = await rubric.score(view, self.metrics)
            span.set_attributes(
                {
                    "rlgw.score_id": score.id,
                    "rlgw.episode_id": score.episode_id,
                    "rlgw.rubric": score.rubric,
                    "rlgw.rubric_version": score.rubric_version,
                    "rlgw.turn_ids": [t.id for t in view.turns],
                }
            )
            score.traceparent = traceparent(span)
            return score

    def _maybe_commit(self, now: float) -> None:
        if self.metrics:
            self.metrics.open_episodes.set(len(self.book))
        if self.book.open_count() == 0 or now - self._last_commit >= self.commit_interval_s:
            self.consumer.commit()
            self._last_commit = now
        if now - self._last_forget >= min(60.0, self.keep_scored_s):
            self.book.forget(now, self.keep_scored_s)
            self._last_forget = now

    async def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except BusUnavailable as exc:
                log.warning("bus unavailable: %s; retrying", exc)
                await asyncio.sleep(1.0)

    def close(self) -> None:
        self.consumer.close()


def _idle_end(st: EpisodeState) -> tuple[str, bytes]:
    eid = st.episode_id
    rid = str(uuid.uuid5(SCORE_NAMESPACE, f"idle-end\x1f{st.tenant}\x1f{eid}\x1f{st.turns}"))
    return eid, EpisodeEnd(id=rid, episode_id=eid, tenant=st.tenant, reason="idle").to_bytes()


def run_worker(
    settings: RewardsSettings,
    bus: Bus,
    stop: threading.Event,
    *,
    rubrics: Sequence[Rubric] | None = None,
    source: EpisodeSource | None = None,
    metrics: WorkerMetrics | None = None,
    tracer: Tracer | None = None,
) -> None:
    """Run a rubric worker until `stop` is set: in its own process, or in a thread of `rlgw up`."""
    from rewards.loader import load_rubrics

    if rubrics is None:
        if settings.rewards.rubrics is None:
            raise ValueError("no rubrics: give --rubrics PATH or rewards.rubrics in the config")
        rubrics = load_rubrics(settings.rewards.rubrics, settings.rewards)
    worker = RubricWorker.from_settings(settings, rubrics, bus, source=source, metrics=metrics, tracer=tracer)
    log.info("rubric worker: %s", ", ".join(f"{r.name}@{r.version}" for r in worker.rubrics))
    prefix = settings.ledger.topic_prefix
    watch = JudgeWatch.from_config(settings.rewards, worker.rubrics, bus, prefix, settings.data_dir)
    if watch is not None:  # each judge's probe set, on a schedule (rewards/judge_watch.py)
        watch.start(stop)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(worker.run(stop))
    finally:
        worker.close()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
