"""The learner follows the fleet: after a rollback it continues from the serving version and
never publishes a descendant of a rolled-back one (tiny model, CPU)."""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from safetensors.torch import load_file

from learner.checkpoint import complete_versions, resume
from learner.follow import Fleet, continue_from_serving, off_the_fleet
from learner.loop import run_learner
from learner.publish import FakePublisher
from learner.train import Trainer
from ledger.published import PublishedVersion
from rlgw.config import Settings
from tests.unit.test_learner_train import config, scored_episodes


def _lora(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}


def test_off_the_fleet_is_a_rolled_back_link_between_parent_and_serving() -> None:
    fleet = Fleet("v1", frozenset({"v2"}), {"v1": "base", "v2": "v1", "v3": "v2"})
    assert off_the_fleet("v3", fleet, [])  # a child of the rolled-back v2
    assert off_the_fleet("v2", fleet, [])
    assert not off_the_fleet("v1", fleet, [])
    pending = [PublishedVersion(version="v4", adapter_path="/x", parent="v3")]
    assert off_the_fleet("v4", fleet, pending)  # not yet published: its parent is known here
    assert not off_the_fleet("v5", Fleet("v5", frozenset({"v1"}), {"v5": "v1"}), [])  # serving itself


def test_a_learner_after_a_rollback_continues_from_the_serving_version(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, learner=config(batch_episodes=4, steps_per_version=2, poll_interval_s=0.01)
    )
    reader = scored_episodes(24)
    first = FakePublisher()
    report = run_learner(settings, reader, first, threading.Event(), model_dir=tiny_model_dir, max_versions=2)
    v1, v2 = report.versions
    # v2 was rolled back while the learner was down (killed during the rollback): v1 serves
    fleet = FakePublisher(serving=v1, rolled_back={v2})
    fleet.published = list(first.published)
    report = run_learner(settings, reader, fleet, threading.Event(), model_dir=tiny_model_dir, max_versions=1)
    (v3,) = report.versions
    assert report.followed == [v1]
    assert [p["version"] for p in fleet.published[2:]] == [v3]  # v2 never published again
    assert fleet.published[2]["parent"] == v1
    assert fleet.published[2]["data_window"]["after"] == first.published[1]["data_window"]["until"]


def test_continue_from_serving_loads_its_weights_or_a_zero_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, learner=config(batch_episodes=4, steps_per_version=2, poll_interval_s=0.01)
    )
    run_learner(
        settings,
        scored_episodes(16),
        FakePublisher(),
        threading.Event(),
        model_dir=tiny_model_dir,
        max_versions=2,
    )
    root = tmp_path / "learner"
    v1, v2 = (s.version for s in complete_versions(root))
    trainer = Trainer(settings.learner, tiny_model_dir)
    resume(root, trainer)  # at v2
    at_v2 = _lora(trainer)
    assert continue_from_serving(root, trainer, Fleet(v1, frozenset({v2}))) == "checkpoint"
    saved = load_file(Path(complete_versions(root)[0].adapter_path, "adapter_model.safetensors"))
    now = _lora(trainer)
    assert any(not torch.equal(now[k], at_v2[k]) for k in now)
    b = next(k for k in saved if "lora_B" in k)
    assert any(torch.equal(saved[b], v) for v in now.values())
    assert continue_from_serving(root, trainer, Fleet("base")) == "zero adapter"
    assert all(not v.any() for k, v in _lora(trainer).items() if "lora_B" in k)
