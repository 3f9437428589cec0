"""Full-weight versions through the gateway on fake replicas: canary on replicas of its own,
promote, and roll back to weights no replica holds any more — in place and rolling — under
steady traffic, with no failed request and no answer from weights other than its version's."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.fake_upstream import FakeState
from gateway.rollout import FullWeightRollout
from gateway.weights import FakeLauncher
from tests.fixtures.swap_load import SwapLoad
from tests.fixtures.upstream import gateway_settings, start_fake, start_gateway, stop_gateway


def model_folder(root: Path, name: str, tied: bool = False) -> str:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"dtype": "float32", "tie_word_embeddings": tied}))
    return str(folder)


def admin(root: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(root + path, json=body or {}, timeout=60)


def wait_for(cond: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def fits(paths: dict[str, str]) -> Any:
    """An answer fits its version when it carries that version's weights tag (fake replicas tag
    answers `@<folder>`; a replica never reloaded answers untagged: the base)."""

    def check(version: str, text: str) -> bool:
        if "->" in text.split(" ")[0]:
            return False  # weights changed while the request ran
        tag = text.split(" ")[0][1:] if text.startswith("@") else paths["base"]
        return tag == paths.get(version)

    return check


@pytest.mark.parametrize("mode", ["in_place", "rolling"])
def test_full_weight_canary_promote_rollback_under_load(tmp_path: Path, mode: str) -> None:
    replicas = [
        start_fake(FakeState(delay_s=0.2, keep_requests=False)) for _ in range(2 if mode == "in_place" else 1)
    ]
    base = model_folder(tmp_path, "base")
    settings = gateway_settings(tmp_path, [r.url for r in replicas])
    settings.versions.canary_share = 0.5
    settings.versions.min_episodes = 10_000  # decisions by the test only
    settings.versions.full_weights = mode  # type: ignore[assignment]
    settings.versions.base_weights = base
    gw = start_gateway(settings)
    rollout: FullWeightRollout = gw.services.controller.rollout
    launcher = FakeLauncher(delay_s=0.2)
    rollout.launcher = launcher
    pool = gw.services.pool
    v1 = model_folder(tmp_path, "v1")
    paths = {"base": base, "v1": v1}
    try:
        with SwapLoad(gw.url, clients=4) as load:
            time.sleep(0.3)
            resp = admin(gw.root, "/admin/versions", {"version": "v1", "adapter_path": v1, "kind": "full"})
            assert resp.status_code == 200 and resp.json()["status"] == "canary", resp.text
            assert [r.weights for r in pool.replicas].count("v1") == 1  # its own replica
            assert [r.weights for r in pool.replicas].count("base") >= 1  # the serving one keeps its
            wait_for(lambda: sum(o.version == "v1" for o in load.outcomes) >= 10)

            assert admin(gw.root, "/admin/versions/v1/promote").status_code == 200
            wait_for(
                lambda: {r.weights for r in pool.replicas} == {"v1"} and len(pool.replicas) == len(replicas)
            )
            served_at = len(load.outcomes)
            wait_for(lambda: len(load.outcomes) > served_at + 20)

            back = admin(gw.root, "/admin/rollback", {"reason": "test"})  # base: on no replica now
            assert back.status_code == 200 and back.json()["serving"] == "base", back.text
            wait_for(
                lambda: {r.weights for r in pool.replicas} == {"base"} and len(pool.replicas) == len(replicas)
            )
            served_at = len(load.outcomes)
            wait_for(lambda: len(load.outcomes) > served_at + 20)
        assert load.failed() == []
        assert load.wrong(fits(paths)) == []
        versions = {o.version for o in load.outcomes}
        assert versions == {"base", "v1"}
        events = [e.event for e in gw.services.versions.events if e.version == "v1"]
        assert events[:3] == ["registered", "loaded", "canary"] and "resident" in events
        swaps = rollout.swaps
        assert swaps and all(s["mode"] == mode and s["load_ms"] >= 0 for s in swaps)
        if mode == "in_place":
            assert sum(r.state.reloads for r in replicas) >= 4  # canary, promote, back to base twice
        else:
            # the canary's replica went on serving after the promotion; the rollback started one on base
            assert launcher.started == [v1, base]
    finally:
        task = gw.services.controller._task
        if task is not None:
            asyncio.run_coroutine_threadsafe(launcher.close(), task.get_loop()).result(10)
        stop_gateway(gw)
        for r in replicas:
            r.stop.set()


def test_in_place_with_one_replica_keeps_it_serving_and_rejects_a_non_model_folder(tmp_path: Path) -> None:
    replica = start_fake()
    settings = gateway_settings(tmp_path, [replica.url])
    gw = start_gateway(settings)
    try:
        v1 = model_folder(tmp_path, "v1")
        resp = admin(gw.root, "/admin/versions", {"version": "v1", "adapter_path": v1, "kind": "full"})
        assert resp.status_code == 200
        assert resp.json()["status"] == "canary"
        assert gw.services.pool.replicas[0].weights == "base"  # the one replica keeps serving
        r = httpx.post(
            gw.url + "/chat/completions",
            json={"model": "rlgw", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200 and r.headers["x-model-version"] == "base"
        bad = admin(
            gw.root, "/admin/versions", {"version": "v2", "adapter_path": str(tmp_path), "kind": "full"}
        )
        assert bad.status_code == 400 and "config.json" in bad.json()["error"]["message"]
    finally:
        stop_gateway(gw)
        replica.stop.set()


def test_in_place_refuses_tied_embeddings_which_vllm_reloads_wrong(tmp_path: Path) -> None:
    replicas = [start_fake(), start_fake()]
    gw = start_gateway(gateway_settings(tmp_path, [r.url for r in replicas]))
    try:
        tied = model_folder(tmp_path, "tied", tied=True)
        resp = admin(gw.root, "/admin/versions", {"version": "t1", "adapter_path": tied, "kind": "full"})
        assert resp.status_code == 200 and resp.json()["status"] == "failed"
        assert [r.state.reloads for r in replicas] == [0, 0]
        assert gw.services.versions.canary is None
        failed = [e for e in gw.services.versions.events if e.event == "load_failed"]
        assert failed and "ties its embeddings" in failed[0].reason
    finally:
        stop_gateway(gw)
        for r in replicas:
            r.stop.set()
