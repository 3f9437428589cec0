"""The learner process: read scored episodes, train, save a version, publish it; repeat.

    LoRA: save the still-zero adapter and publish it as the base model's stand-in
          (`base_equivalent`: the gateway serves the base through it, docs/vllm.md's mixed-batch bug)
    resume the last complete version (weights, optimizer, baselines, ledger position)
    re-publish it (idempotent: a crash may have come between save and publish)
    loop until stop_event:
        follow the fleet: after a rollback, continue from the serving version (learner/follow.py)
        steps_per_version times: read `batch_episodes` scored episodes after the position,
                                 build samples, one training step
        a version past the KL / entropy guard (learner/stats.py) is held back: not saved nor
            published, the weights go back to its parent's, and the next version's data window
            covers its steps and names it (`held_back`)
        save the version atomically (its data window: the ledger positions it read, and its
            training figures as `training`)
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
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from learner.config import LearnerConfig, LearnerSettings
from learner.follow import ask_fleet, continue_from_serving, off_the_fleet
from learner.publish import publish_pending
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
    held_back: list[str] = field(default_factory=list)  # trained, but past a guard: never published
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
    from learner.model_import import resolve_model
    from learner.stats import held_back, version_figures
    from learner.tiny_model import build_tiny_model, tiny_settings
    from learner.train import Trainer

    cfg = settings.learner
    world = world or World()
    tracer = tracer or trace.NoOpTracer()
    root = Path(cfg.checkpoint_dir or settings.data_dir / "learner").resolve()
    base = model_dir or cfg.model
    if base is None:  # the built-in tiny model, built once (by rank 0)
        tiny = build_tiny_model(settings.data_dir / "tiny-model") if world.leader else ""
        base = world.broadcast(str(tiny))
    elif not Path(base).is_dir():  # a known name or a GGUF file, imported once (by rank 0)
        base = world.broadcast(str(resolve_model(base, settings.data_dir, log.info)) if world.leader else "")
    cfg = tiny_settings(cfg, Path(base))
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
    kind: Literal["lora", "full"] = "full" if cfg.full_finetune else "lora"
    if last and world.leader:
        pending.append(
            PublishedVersion(
                version=last.version,
                adapter_path=str(last.adapter_path),
                parent=last.parent,
                data_window=last.data_window,
                kind=kind,
            )
        )
        log.info(
            "learner resumed from %s (seq %d, step %d, position %s)", last.version, seq, last.step, position
        )

    window_start, episodes = position, 0
    held: list[dict[str, Any]] = []  # versions held back since the last saved one (learner/stats.py)
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
            pending = publish_pending(pending, publisher, report.published)
        enough = max_versions is not None and len(report.versions) >= max_versions
        if world.broadcast(stop_event.is_set() or enough):
            break
        first_step, snapshot = len(report.steps), trainer.snapshot()
        with tracer.start_as_current_span("learner.version") as version_span:
            for _ in range(cfg.steps_per_version):
                batch = _read_batch(read_samples, position, cfg, stop_event) if world.leader else []
                built = world.broadcast(_samples(batch, trainer, cfg, settings.ledger) if batch else None)
                if built is None:
                    break  # stopping
                if batch:
                    position, episodes = batch[-1].position, episodes + len(batch)
                report.steps.append(_step(trainer, *built, batch, report, tracer))
            if world.broadcast(stop_event.is_set() and len(report.steps) == first_step):
                break
            seq += 1
            version = f"v{seq}-{new_id()[-6:]}"
            figures = version_figures(report.steps[first_step:])
            reason = held_back(figures, max_kl_base=cfg.max_kl_base, max_entropy_rise=cfg.max_entropy_rise)
            if reason is not None and snapshot is not None:
                # not published: back to its parent's weights; the next version's window
                # covers these steps' data too, and names this one
                log.warning("learner held back %s (parent %s): %s; %s", version, parent, reason, figures)
                trainer.restore(snapshot)
                trainer.metrics.observe_held_back()
                report.held_back.append(version)
                held.append({"version": version, "reason": reason, "training": figures})
                continue
            window: dict[str, Any] = {"after": window_start, "until": position, "episodes": episodes}
            window |= {
                "steps": trainer.steps,
                TRAINING_KEY: training_window(report.steps[first_step:], figures),
            }
            if held:
                window["held_back"], held = held, []
            window_start, episodes = position, 0
            state = None
            if world.leader or trainer.sharded:  # sharded: every rank saves its part
                saved = save_version(
                    root, trainer, version=version, parent=parent, seq=seq, data_window=window
                )
                state = saved if world.leader else None
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
                    kind=kind,
                )
            )
            if cfg.keep_versions > 0:
                pending = publish_pending(pending, publisher, report.published)  # so the gateway knows it
                now = ask_fleet(publisher)
                prune(root, cfg.keep_versions, now.protect(pending) if now else None)
        parent = version
    if world.leader:
        publish_pending(pending, publisher, report.published)
    return report


def _samples(
    batch: Sequence[Any], trainer: Any, cfg: Any, ledger: Any
) -> tuple[list[Any], Counter[str], list[tuple[str, str, float]]]:
    """The training samples of a batch of scored episodes (each once, with one reward, none held
    out: learner/selection.py), what was skipped building them, and the baseline-only rewards."""
    from learner.samples import build_samples
    from learner.selection import select

    chosen = select(batch, trainer.trained, ledger.holdout_fraction)
    samples = []
    skipped: Counter[str] = Counter(chosen.skipped)
    for item, score in chosen.items:
        built, stats = build_samples(score, item.episode, max_tokens=cfg.max_sample_tokens)
        samples += built
        skipped.update({k: v for k, v in stats.counts.items() if k not in ("samples", "turns_continued")})
    return samples, skipped, chosen.baseline_only


def _step(
    trainer: Any,
    samples: list[Any],
    skipped: Counter[str],
    baseline_only: list[tuple[str, str, float]],
    batch: Sequence[Any],
    report: LearnerReport,
    tracer: Any,
) -> Any:
    """One training step, in a span linked to the scores it trains on (rank 0 has the batch)."""
    report.skipped.update(skipped)
    trainer.metrics.observe_skips(dict(skipped))
    for rubric, task, reward in baseline_only:  # re-scores of trained episodes (learner/selection.py)
        trainer.advantages.observe(rubric, task, reward)
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


def _trained_on(batch: Sequence[Any]) -> list[Any]:
    """Links to the spans of the scores in a batch, each followed by its turns' (bounded)."""
    targets: list[tuple[str | None, dict[str, str]]] = []
    for item in batch:
        targets.append((item.score.traceparent, {"rlgw.score_id": item.score.id}))
        targets += [(t.traceparent, {"rlgw.turn_id": t.id}) for t in item.episode.turns]
    return links(targets)
