"""Per-step and per-version figures, and the guard that holds a version back (learner/stats.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry

from learner.config import LearnerConfig
from learner.loop import run_learner
from learner.publish import FakePublisher
from learner.stats import StepStats, held_back, version_figures
from ledger.reads import MemoryScoredEpisodes, ScoredEpisode
from rlgw.config import Settings
from tests.unit.test_learner_train import scored_episodes


def test_version_figures_weigh_steps_by_tokens_and_the_guard_names_its_reason() -> None:
    a = StepStats(
        step=1, tokens=100, entropy=2.0, entropy_base=2.0, kl_base=0.1, ratio_min=0.8, ratio_max=1.1
    )
    b = StepStats(
        step=2, tokens=300, entropy=4.0, entropy_base=2.0, kl_base=0.3, ratio_min=0.5, ratio_max=1.5
    )
    a.seconds = b.seconds = 2.0
    f = version_figures([a, b])
    assert f["entropy"] == pytest.approx(3.5) and f["kl_base"] == pytest.approx(0.25)
    assert (f["ratio_min"], f["ratio_max"], f["tokens_per_s"]) == (0.5, 1.5, 100.0)
    assert held_back(f, max_kl_base=0.5, max_entropy_rise=2.0) is None
    assert "kl_base" in (held_back(f, max_kl_base=0.2, max_entropy_rise=0) or "")
    assert "entropy" in (held_back(f, max_kl_base=0, max_entropy_rise=1.0) or "")
    assert held_back(version_figures([StepStats(step=1)]), max_kl_base=0.1, max_entropy_rise=0.1) is None


class StopAtTheEnd(MemoryScoredEpisodes):
    """Scored episodes that ask the learner to stop once every one was read."""

    def __init__(self, items: list[ScoredEpisode], stop: threading.Event) -> None:
        super().__init__()
        self.items, self.stop = items, stop

    def scored(self, after: str | None = None, *, limit: int = 1000) -> list[ScoredEpisode]:
        got = super().scored(after, limit=limit)
        if not got:
            self.stop.set()
        return got


def test_a_version_past_the_kl_limit_is_held_back_and_its_parent_weights_restored(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    stop = threading.Event()
    reader = StopAtTheEnd(scored_episodes(8).items, stop)
    cfg = LearnerConfig(
        device="cpu", lr=1e-2, batch_episodes=4, steps_per_version=2, poll_interval_s=0.01, max_kl_base=1e-9
    )
    reg = CollectorRegistry()
    publisher = FakePublisher()
    report = run_learner(
        Settings(data_dir=tmp_path, learner=cfg),
        reader,
        publisher,
        stop,
        model_dir=tiny_model_dir,
        registry=reg,
    )
    first, last = report.steps
    assert first.kl_base == 0.0 and last.kl_base is not None and last.kl_base > 0  # the adapter starts at 0
    assert report.versions == [] and len(report.held_back) == 1 and publisher.published == []
    assert reg.get_sample_value("rlgw_learner_held_back_total") == 1.0
    assert reg.get_sample_value("rlgw_learner_kl_base") == pytest.approx(last.kl_base)


def test_restore_puts_back_the_weights_and_the_optimizer(tiny_model_dir: Path) -> None:
    from learner.train import Trainer
    from tests.unit.test_learner_train import on_policy_sample

    trainer = Trainer(LearnerConfig(device="cpu", lr=1e-2), tiny_model_dir)
    before = [p.detach().clone() for p in trainer.params]
    snap = trainer.snapshot()
    trainer.step(
        [on_policy_sample(trainer, [1, 5, 9, 11, 13, 17], 3), on_policy_sample(trainer, [1, 5, 8, 12], 3)]
    )
    assert any(not torch.equal(p, q) for p, q in zip(trainer.params, before, strict=True))
    trainer.restore(snap)
    assert all(torch.equal(p, q) for p, q in zip(trainer.params, before, strict=True))
    assert trainer.optimizer.state_dict()["state"] == {}


def test_the_cpu_trains_in_the_served_dtype_where_it_computes_bf16_natively(tmp_path: Path) -> None:
    from learner.model_load import auto_dtype

    cpu = torch.device("cpu")
    native = any(f in Path("/proc/cpuinfo").read_text() for f in ("avx512_bf16", "amx_bf16"))
    (tmp_path / "config.json").write_text('{"dtype": "bfloat16"}')
    assert auto_dtype(cpu, tmp_path) == (torch.bfloat16 if native else torch.float32)
    (tmp_path / "config.json").write_text('{"dtype": "float32"}')
    assert auto_dtype(cpu, tmp_path) == torch.float32  # the tiny model: exact agreement with the engine
