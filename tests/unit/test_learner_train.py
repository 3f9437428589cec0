"""The training step, atomic versions and resume, publishing, and the loop (tiny model, CPU)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file

from learner.checkpoint import complete_versions, latest_version, resume, save_version
from learner.config import LearnerConfig
from learner.loop import run_learner
from learner.publish import FakePublisher, HttpPublisher, PublishError
from learner.samples import Sample
from learner.train import Trainer
from ledger.published import PublishedVersion
from ledger.reads import MemoryScoredEpisodes
from ledger.records import Episode, Score, Turn, TurnChoice
from rlgw.config import Settings

TARGETS = [*LearnerConfig().lora_targets, "lm_head"]


def config(**kw) -> LearnerConfig:
    return LearnerConfig(device="cpu", lr=1e-2, lora_targets=TARGETS, **kw)


def on_policy_sample(trainer: Trainer, tokens: list[int], n_prompt: int, version: str = "base") -> Sample:
    """A sample whose behaviour log-probs are the trainer's own (unpacked) log-probs."""
    with torch.no_grad():
        logits = trainer.causal_lm(torch.tensor([tokens])).logits[0].float()  # (T, V)
    lp = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(tokens[1:])[:, None])[:, 0]
    behaviour = [0.0] * n_prompt + lp[n_prompt - 1 :].tolist()
    return Sample(
        tokens=tokens,
        loss_mask=[False] * n_prompt + [True] * (len(tokens) - n_prompt),
        behaviour_logprobs=behaviour,
        reward=float(tokens[-1] % 2),
        rubric="r",
        task="t",
        episode_id="e",
        versions=[version],
    )


def test_packed_step_is_on_policy_and_counts_stale_samples(tiny_model_dir: Path) -> None:
    trainer = Trainer(config(max_staleness=1), tiny_model_dir)
    g = torch.Generator().manual_seed(0)
    samples = [
        on_policy_sample(trainer, torch.randint(3, 700, (n,), generator=g).tolist(), 4) for n in (9, 6, 12)
    ]
    stats = trainer.step(samples)
    # packed with a block-diagonal mask, the learner's log-probs equal the unpacked ones: ratio 1
    assert stats.ratio_mean == pytest.approx(1.0, abs=1e-4)
    assert stats.clipped_frac == 0.0
    assert stats.tokens == 5 + 2 + 8 and stats.samples == 3
    assert stats.entropy > 0

    trainer.lineage += ["v1", "v2"]  # "base" is now two versions old, beyond max_staleness=1
    stale = on_policy_sample(trainer, [5, 6, 7, 8], 2)
    unknown = on_policy_sample(trainer, [5, 6, 7, 8], 2, version="elsewhere")
    stats = trainer.step([stale, unknown, on_policy_sample(trainer, [5, 6, 7, 9], 2, version="v1")])
    assert dict(stats.skipped) == {"stale": 1, "unknown_version": 1}
    assert stats.samples == 1


def test_versions_are_atomic_and_resume_restores_everything(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(config(), tiny_model_dir)
    trainer.step([on_policy_sample(trainer, [5, 6, 7, 8, 9], 2)])
    state = save_version(tmp_path, trainer, version="v1-a", parent="base", seq=1, data_window={"until": "7"})

    adapter = Path(state.path) / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert not cfg.get("modules_to_save") and "lm_head" in cfg["target_modules"]
    assert (adapter / "adapter_model.safetensors").is_file()

    # a crash mid-save leaves a temp dir; a dir without the marker is not a version either
    vdir = tmp_path / "versions"
    (vdir / ".tmp-v2-b-x1").mkdir()
    (vdir / ".tmp-v2-b-x1" / "state.json").write_text("{}")
    (vdir / "v3-c").mkdir()
    (vdir / "v3-c" / "state.json").write_text(
        json.dumps({**json.loads((Path(state.path) / "state.json").read_text()), "seq": 3})
    )
    assert [s.version for s in complete_versions(tmp_path)] == ["v1-a"]
    assert latest_version(tmp_path).version == "v1-a"  # type: ignore[union-attr]

    fresh = Trainer(config(), tiny_model_dir)
    resumed = resume(tmp_path, fresh)
    assert resumed is not None and resumed.data_window == {"until": "7"}
    assert sorted(p.name for p in vdir.iterdir()) == ["v1-a"]  # leftovers removed
    assert fresh.lineage == ["base", "v1-a"] and fresh.steps == 1
    for (name, a), (_, b) in zip(
        trainer.model.named_parameters(), fresh.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    assert fresh.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()
    assert fresh.advantages.baseline == trainer.advantages.baseline


def test_http_publisher_retries_transient_errors_only() -> None:
    calls: list[httpx.Request] = []
    answers = [503, 502, 201]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(answers[len(calls) - 1], json={})

    pub = HttpPublisher("http://gw", "sk-admin", backoff_s=0, transport=httpx.MockTransport(handler))
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    pub.publish(
        PublishedVersion(
            version="v1",
            adapter_path="/ckpt/v1/adapter",
            parent="base",
            data_window={"until": "9"},
            traceparent=tp,
        )
    )
    assert len(calls) == 3
    assert calls[0].url == "http://gw/admin/versions"
    assert calls[0].headers["authorization"] == "Bearer sk-admin"
    assert json.loads(calls[0].content) == {
        "version": "v1",
        "adapter_path": "/ckpt/v1/adapter",
        "parent": "base",
        "data_window": {"until": "9"},
        "base_equivalent": False,
        "traceparent": tp,
        "kind": "lora",
    }

    refused = HttpPublisher(
        "http://gw", "k", backoff_s=0, transport=httpx.MockTransport(lambda r: httpx.Response(409, text="no"))
    )
    with pytest.raises(PublishError, match="409"):
        refused.publish(PublishedVersion(version="v1", adapter_path="/p"))


def scored_episodes(n: int) -> MemoryScoredEpisodes:
    reader = MemoryScoredEpisodes()
    for i in range(n):
        completion = [10 + i % 7, 20 + i % 5, 2]
        ep = Episode(
            episode_id=f"e{i}",
            turns=[
                Turn(
                    episode_id=f"e{i}",
                    model="m",
                    version="base",
                    prompt_token_ids=[1, 50 + i % 3, 2, 1],
                    choices=[TurnChoice(token_ids=completion, logprobs=[-6.6] * 3)],
                    tokens_recorded=True,
                )
            ],
        )
        reader.add(Score(episode_id=f"e{i}", rubric="r", rubric_version="1", total=float(i % 2)), ep)
    return reader


def test_loop_saves_publishes_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        learner=config(batch_episodes=4, steps_per_version=2, poll_interval_s=0.01),
        ledger={"holdout_fraction": 0.0},  # type: ignore[arg-type]  # every episode trains (ledger/holdout.py)
    )
    reader = scored_episodes(24)
    publisher = FakePublisher(fail_first=1)  # the first publish fails: it stays pending, then goes out
    report = run_learner(
        settings, reader, publisher, threading.Event(), model_dir=tiny_model_dir, max_versions=2
    )
    assert len(report.steps) == 4 and all(s.samples == 4 for s in report.steps)
    v1, v2 = report.versions
    assert [p["version"] for p in publisher.published] == [v1, v2]
    assert publisher.published[1]["parent"] == v1
    assert publisher.published[1]["data_window"]["after"] == "000000000007"
    assert publisher.published[1]["data_window"]["until"] == "000000000015"
    assert Path(publisher.published[1]["adapter_path"], "adapter_config.json").is_file()
    # the base model's stand-in: the adapter before any step, all zeros
    (zero,) = publisher.base_adapters
    weights = load_file(Path(zero["adapter_path"], "adapter_model.safetensors"))
    assert any("lora_B" in k for k in weights)
    assert all(not w.any() for k, w in weights.items() if "lora_B" in k)

    # a restarted learner resumes after v2: re-publishes it (idempotent), trains v3 on what follows
    again = FakePublisher()
    report = run_learner(settings, reader, again, threading.Event(), model_dir=tiny_model_dir, max_versions=1)
    (v3,) = report.versions
    assert v3.startswith("v3-")
    assert [p["version"] for p in again.published] == [v2, v3]
    assert again.published[1]["parent"] == v2
    assert again.published[1]["data_window"]["after"] == "000000000015"
