"""The learner process: read scored episodes, train, save a version, publish it; repeat.

    LoRA: save the still-zero adapter and publish it as the base model's stand-in
          (`base_equivalent`: the gateway serves the base through it, SERVICES.md's mixed-batch bug)
    resume the last complete version (weights, optimizer, baselines, ledger position)
    re-publish it (idempotent: a crash may have come between save and publish)
    loop until stop_event:
        steps_per_version times: read `batch_episodes` scored episodes after the position,
                                 build samples, one training step
        save the version atomically (its data window: the ledger positions it read)
        publish it (a gateway that stays down leaves it pending; it is retried before the next)

The read side is a small protocol, `ScoredEpisodes.scored(after, limit=...)`, returning items
with `.position` (resumes a read), `.score` and `.episode` — the ledger store's `scored` read
has this shape; `MemoryScoredEpisodes` is the in-memory one for tests and demos.

Traces (ledger.tracing): each version is a `learner.version` span, the parent of its steps'
`learner.step` spans, which link to the scores they trained on and to those scores' turns;
the version is published with the version span's trace context, so its ModelVersion events
carry the steps' trace id.

Publishing is a boundary: any exception from the publisher is logged and the version stays
pending, to be published (in order) before the next one — the learner keeps training while
the gateway is away, and never publishes a version that is not completely saved.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from ledger.config import Settings
from ledger.ids import new_id
from ledger.records import Episode, Score
from ledger.tracing import links, traceparent

log = logging.getLogger(__name__)


class ScoredRecord(Protocol):
    @property
    def position(self) -> str: ...
    @property
    def score(self) -> Score: ...
    @property
    def episode(self) -> Episode: ...


class ScoredEpisodes(Protocol):
    def scored(self, after: str | None = None, *, limit: int = 1000) -> Sequence[ScoredRecord]: ...


@dataclass(frozen=True)
class MemoryScored:
    position: str
    score: Score
    episode: Episode


class MemoryScoredEpisodes:
    """Scored episodes in memory, in arrival order; a position is the item's index, zero-padded."""

    def __init__(self) -> None:
        self.items: list[MemoryScored] = []
        self._lock = threading.Lock()

    def add(self, score: Score, episode: Episode) -> str:
        with self._lock:
            pos = f"{len(self.items):012d}"
            self.items.append(MemoryScored(pos, score, episode))
            return pos

    def scored(self, after: str | None = None, *, limit: int = 1000) -> list[MemoryScored]:
        start = 0 if after is None else int(after) + 1
        with self._lock:
            return self.items[start : start + limit]


@dataclass(frozen=True)
class Pending:
    """A saved version (or the zero base adapter) not yet accepted by the gateway."""

    version: str
    adapter_path: str
    parent: str | None
    data_window: dict[str, Any]
    base_equivalent: bool = False
    traceparent: str | None = None  # the version's span


@dataclass
class LearnerReport:
    steps: list[Any] = field(default_factory=list)  # StepStats, one per step
    versions: list[str] = field(default_factory=list)  # saved, in order
    published: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # sample-building skips


def run_learner(
    settings: Settings,
    read_samples: ScoredEpisodes,
    publisher: Any,  # learner.publish.Publisher
    stop_event: threading.Event,
    *,
    model_dir: str | Path | None = None,
    registry: CollectorRegistry | None = None,
    max_versions: int | None = None,
    tracer: trace.Tracer | None = None,
) -> LearnerReport:
    """Train and publish versions until `stop_event` is set (or `max_versions` were saved)."""
    from learner.checkpoint import prune, resume, save_version, save_zero_adapter
    from learner.train import Trainer

    cfg = settings.learner
    tracer = tracer or trace.NoOpTracer()
    root = Path(cfg.checkpoint_dir or settings.data_dir / "learner").resolve()
    base = Path(model_dir or cfg.model or _tiny_model(settings.data_dir))
    trainer = Trainer(cfg, base, registry=registry)
    report = LearnerReport()

    pending: list[Pending] = []
    if not cfg.full_finetune:
        zero = f"zero-{new_id()[-6:]}"
        path = save_zero_adapter(root, trainer, zero)
        pending.append(Pending(zero, str(path), None, {}, base_equivalent=True))
    last = resume(root, trainer)
    position: str | None = last.data_window.get("until") if last else None
    seq = last.seq if last else 0
    parent = last.version if last else cfg.base_version
    if last:
        pending.append(Pending(last.version, str(last.adapter_path), last.parent, last.data_window))
    if last:
        log.info(
            "learner resumed from %s (seq %d, step %d, position %s)", last.version, seq, last.step, position
        )

    while not stop_event.is_set():
        pending = _publish_pending(pending, publisher, report)
        if max_versions is not None and len(report.versions) >= max_versions:
            break
        window_start, episodes = position, 0
        with tracer.start_as_current_span("learner.version") as version_span:
            for _ in range(cfg.steps_per_version):
                batch = _read_batch(
                    read_samples, position, cfg.batch_episodes, cfg.poll_interval_s, stop_event
                )
                if not batch:
                    break  # stopping
                position = batch[-1].position
                episodes += len(batch)
                report.steps.append(_step(trainer, batch, cfg.max_sample_tokens, report, tracer))
            if stop_event.is_set() and episodes == 0:
                break
            seq += 1
            version = f"v{seq}-{new_id()[-6:]}"
            window = {"after": window_start, "until": position, "episodes": episodes, "steps": trainer.steps}
            state = save_version(root, trainer, version=version, parent=parent, seq=seq, data_window=window)
            version_span.set_attributes(
                {"rlgw.version": version, "rlgw.parent": parent, "rlgw.steps": trainer.steps}
            )
        trainer.metrics.observe_version()
        report.versions.append(version)
        log.info("learner saved %s (parent %s) window %s", version, parent, window)
        traced = traceparent(version_span)
        pending.append(Pending(version, str(state.adapter_path), state.parent, window, traceparent=traced))
        parent = version
        prune(root, cfg.keep_versions)
    _publish_pending(pending, publisher, report)
    return report


def _step(trainer: Any, batch: Sequence[Any], max_tokens: int, report: LearnerReport, tracer: Any) -> Any:
    """One training step on a batch of scored episodes, in a span linked to what it trains on."""
    from learner.samples import build_samples

    samples = []
    skipped: Counter[str] = Counter()
    for item in _latest_scores(batch):
        built, stats = build_samples(item.score, item.episode, max_tokens=max_tokens)
        samples += built
        skipped.update({k: v for k, v in stats.counts.items() if k not in ("samples", "turns_continued")})
    report.skipped.update(skipped)
    trainer.metrics.observe_skips(dict(skipped))
    with tracer.start_as_current_span("learner.step", links=_trained_on(batch)) as span:
        step = trainer.step(samples)
        span.set_attributes({"rlgw.step": step.step, "rlgw.samples": step.samples, "rlgw.scores": len(batch)})
    step.skipped.update(skipped)
    return step


def _read_batch(
    reader: ScoredEpisodes, after: str | None, want: int, poll_s: float, stop: threading.Event
) -> list[Any]:
    """Exactly `want` scored episodes after `after`, waiting for more while there are fewer."""
    batch: list[Any] = []
    while not stop.is_set():
        got = reader.scored(batch[-1].position if batch else after, limit=want - len(batch))
        batch += got
        if len(batch) >= want:
            return batch
        if not got:
            stop.wait(poll_s)
    return []


def _latest_scores(batch: Sequence[Any]) -> list[Any]:
    """Within one read, a re-score supersedes an earlier score of the same episode and rubric."""
    latest: dict[tuple[str, str, str], Any] = {}
    for item in batch:
        latest[(item.score.tenant, item.episode.episode_id, item.score.rubric)] = item
    return list(latest.values())


def _trained_on(batch: Sequence[Any]) -> list[Any]:
    """Links to the spans of the scores in a batch, each followed by its turns' (bounded)."""
    targets: list[tuple[str | None, dict[str, str]]] = []
    for item in batch:
        targets.append((item.score.traceparent, {"rlgw.score_id": item.score.id}))
        targets += [(t.traceparent, {"rlgw.turn_id": t.id}) for t in item.episode.turns]
    return links(targets)


def _publish_pending(pending: list[Pending], publisher: Any, report: LearnerReport) -> list[Pending]:
    """Publish saved versions in order; stop at the first failure and keep the rest pending."""
    for i, p in enumerate(pending):
        try:
            publisher.publish(
                p.version,
                p.adapter_path,
                p.parent,
                p.data_window,
                base_equivalent=p.base_equivalent,
                traceparent=p.traceparent,
            )
        except Exception as exc:  # the boundary: whatever the gateway says, retry before the next
            log.error("learner could not publish %s (will retry): %s", p.version, exc)
            return pending[i:]
        if not p.base_equivalent:
            report.published.append(p.version)
    return []


def _tiny_model(data_dir: Path) -> Path:
    from learner.tiny_model import build_tiny_model

    return build_tiny_model(data_dir / "tiny-model")
