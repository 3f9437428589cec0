"""The learner process: read scored episodes, train, save a version, publish it; repeat.

    LoRA: save the still-zero adapter and publish it as the base model's stand-in
          (`base_equivalent`: the gateway serves the base through it, docs/vllm.md's mixed-batch bug)
    resume the last complete version (weights, optimizer, baselines, ledger position)
    re-publish it (idempotent: a crash may have come between save and publish)
    loop until stop_event:
        follow the fleet: after a rollback, continue from the serving version (learner/follow.py)
        steps_per_version times: read `batch_episodes` scored episodes after the position,
                                 build samples, one training step
        save the version atomically (its data window: the ledger positions it read)
        publish it (a gateway that stays down leaves it pending; it is retried before the next)

The read side is the ledger's `ScoredReads` seam (`ledger.reads`): `scored(after, limit=...)`
returns items with `.position` (resumes a read), `.score` and `.episode`; every store has it, and
`ledger.reads.MemoryScoredEpisodes` is the in-memory one for tests and drills. Versions go out
as `ledger.published.PublishedVersion` records.

Traces (ledger.tracing): each version is a `learner.version` span, the parent of its steps'
`learner.step` spans, which link to the scores they trained on and to those scores' turns;
the version is published with the version span's trace context, so its ModelVersion events
carry the steps' trace id.

Under torchrun (learner/distributed.py) every rank runs this loop: rank 0 alone reads, builds
each step's samples, saves and publishes, and broadcasts the samples, the version names and its
decisions to stop; every rank trains on its shard of each step, and resumes the version rank 0
found.

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
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from learner.config import LearnerConfig, LearnerSettings
from learner.follow import ask_fleet, continue_from_serving, off_the_fleet
from ledger.ids import new_id
from ledger.published import BASE_VERSION, PublishedVersion
from ledger.reads import ScoredReads
from ledger.tracing import links, traceparent
from ledger.training import TRAINING_KEY, training_window

if TYPE_CHECKING:
    from learner.distributed import World

log = logging.getLogger(__name__)


@dataclass
class LearnerReport:
    steps: list[Any] = field(default_factory=list)  # StepStats, one per step
    versions: list[str] = field(default_factory=list)  # saved, in order
    published: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # sample-building skips
    followed: list[str] = field(default_factory=list)  # serving versions continued from after a rollback


def run_learner(
    settings: LearnerSettings,
    read_samples: ScoredReads | None,
    publisher: Any,  # learner.publish.Publisher; None on ranks other than 0
    stop_event: threading.Event,
    *,
    model_dir: str | Path | None = None,
    registry: CollectorRegistry | None = None,
    max_versions: int | None = None,
    tracer: trace.Tracer | None = None,
    world: World | None = None,
) -> LearnerReport:
    """Train and publish versions until `stop_event` is set (or `max_versions` were saved).

    Under torchrun every rank calls this with its `world` (learner.distributed): rank 0 reads,
    saves and publishes, and broadcasts each step's samples and each decision to stop; the
    others train their shard and follow (their `read_samples`, `publisher` and `stop_event`
    are not used)."""
    from learner.checkpoint import prune, resume, save_version, save_zero_adapter
    from learner.distributed import World
    from learner.train import Trainer

    cfg = settings.learner
    world = world or World()
    tracer = tracer or trace.NoOpTracer()
    root = Path(cfg.checkpoint_dir or settings.data_dir / "learner").resolve()
    base = model_dir or cfg.model
    if base is None:  # the built-in tiny model, built once (by rank 0)
        base = world.broadcast(str(_tiny_model(settings.data_dir)) if world.leader else "")
    trainer = Trainer(cfg, Path(base), registry=registry, world=world)
    report = LearnerReport()

    pending: list[PublishedVersion] = []
    if world.leader and not cfg.full_finetune:
        zero = f"zero-{new_id()[-6:]}"
        path = save_zero_adapter(root, trainer, zero)
        pending.append(PublishedVersion(version=zero, adapter_path=str(path), base_equivalent=True))
    last = resume(root, trainer)
    position: str | None = last.data_window.get("until") if last else None
    seq = last.seq if last else 0
    parent = last.version if last else BASE_VERSION
    if last and world.leader:
        pending.append(
            PublishedVersion(
                version=last.version,
                adapter_path=str(last.adapter_path),
                parent=last.parent,
                data_window=last.data_window,
            )
        )
        log.info(
            "learner resumed from %s (seq %d, step %d, position %s)", last.version, seq, last.step, position
        )

    fleet = None
    while True:
        if world.leader:
            fleet = ask_fleet(publisher)
        if world.broadcast(fleet is not None and off_the_fleet(parent, fleet, pending)):
            fleet = world.broadcast(fleet)
            assert fleet is not None
            how = continue_from_serving(root, trainer, fleet)
            dropped = [p.version for p in pending if not p.base_equivalent]
            pending = [p for p in pending if p.base_equivalent]
            log.warning(
                "learner: %s is off the fleet (rolled back); continuing from %s (%s), dropped %s",
                parent,
                fleet.serving,
                how,
                dropped,
            )
            parent = fleet.serving
            report.followed.append(fleet.serving)
        if world.leader:
            pending = _publish_pending(pending, publisher, report)
        enough = max_versions is not None and len(report.versions) >= max_versions
        if world.broadcast(stop_event.is_set() or enough):
            break
        window_start, episodes, first_step = position, 0, len(report.steps)
        with tracer.start_as_current_span("learner.version") as version_span:
            for _ in range(cfg.steps_per_version):
                batch = _read_batch(read_samples, position, cfg, stop_event) if world.leader else []
                built = world.broadcast(_samples(batch, cfg.max_sample_tokens) if batch else None)
                if built is None:
                    break  # stopping
                if batch:
                    position, episodes = batch[-1].position, episodes + len(batch)
                report.steps.append(_step(trainer, *built, batch, report, tracer))
            if world.broadcast(stop_event.is_set() and episodes == 0):
                break
            seq += 1
            version = f"v{seq}-{new_id()[-6:]}"
            window: dict[str, Any] = {"after": window_start, "until": position, "episodes": episodes}
            window |= {"steps": trainer.steps, TRAINING_KEY: training_window(report.steps[first_step:])}
            state = None
            if world.leader:
                state = save_version(
                    root, trainer, version=version, parent=parent, seq=seq, data_window=window
                )
            version = world.broadcast(version)  # the other ranks wait here while rank 0 saves
            trainer.lineage.append(version)
            version_span.set_attributes(
                {"rlgw.version": version, "rlgw.parent": parent, "rlgw.steps": trainer.steps}
            )
        trainer.metrics.observe_version()
        report.versions.append(version)
        if state is not None:
            log.info("learner saved %s (parent %s) window %s", version, parent, window)
            traced = traceparent(version_span)
            pending.append(
                PublishedVersion(
                    version=version,
                    adapter_path=str(state.adapter_path),
                    parent=state.parent,
                    data_window=window,
                    traceparent=traced,
                )
            )
            prune(root, cfg.keep_versions, protect=fleet.serving if fleet else None)
        parent = version
    if world.leader:
        _publish_pending(pending, publisher, report)
    return report


def _samples(batch: Sequence[Any], max_tokens: int) -> tuple[list[Any], Counter[str]]:
    """The training samples of a batch of scored episodes, and what was skipped building them."""
    from learner.samples import build_samples

    samples = []
    skipped: Counter[str] = Counter()
    for item in _latest_scores(batch):
        built, stats = build_samples(item.score, item.episode, max_tokens=max_tokens)
        samples += built
        skipped.update({k: v for k, v in stats.counts.items() if k not in ("samples", "turns_continued")})
    return samples, skipped


def _step(
    trainer: Any,
    samples: list[Any],
    skipped: Counter[str],
    batch: Sequence[Any],
    report: LearnerReport,
    tracer: Any,
) -> Any:
    """One training step, in a span linked to the scores it trains on (rank 0 has the batch)."""
    report.skipped.update(skipped)
    trainer.metrics.observe_skips(dict(skipped))
    if trainer.steps == 0:
        log.info("learner first step: %d samples", len(samples), extra={"learner_phase": "first_step"})
    with tracer.start_as_current_span("learner.step", links=_trained_on(batch)) as span:
        step = trainer.step(samples)
        span.set_attributes({"rlgw.step": step.step, "rlgw.samples": step.samples, "rlgw.scores": len(batch)})
    step.skipped.update(skipped)
    return step


def _read_batch(
    reader: ScoredReads | None, after: str | None, cfg: LearnerConfig, stop: threading.Event
) -> list[Any]:
    """Exactly `batch_episodes` scored episodes after `after`, waiting while there are fewer."""
    assert reader is not None  # rank 0 reads
    batch: list[Any] = []
    want = cfg.batch_episodes
    while not stop.is_set():
        got = reader.scored(batch[-1].position if batch else after, limit=want - len(batch))
        batch += got
        if len(batch) >= want:
            return batch
        if not got:
            stop.wait(cfg.poll_interval_s)
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


def _publish_pending(
    pending: list[PublishedVersion], publisher: Any, report: LearnerReport
) -> list[PublishedVersion]:
    """Publish saved versions in order; stop at the first failure and keep the rest pending."""
    for i, p in enumerate(pending):
        try:
            publisher.publish(p)
        except Exception as exc:  # the boundary: whatever the gateway says, retry before the next
            log.error("learner could not publish %s (will retry): %s", p.version, exc)
            return pending[i:]
        if not p.base_equivalent:
            report.published.append(p.version)
    return []


def _tiny_model(data_dir: Path) -> Path:
    from learner.tiny_model import build_tiny_model

    return build_tiny_model(data_dir / "tiny-model")
