"""`torchrun --nproc-per-node=2 rlgw learner` (gloo on the CPU) in front of an `rlgw gateway`.

The learner's own ledger (the embedded default: the local log on disk and chdb, filled by the
writer in rank 0) holds 12 scored episodes, written before it starts; with 4 episodes per step
and one step per version it trains three versions, then waits for more until SIGTERM. Rank 0
alone saves and publishes: the gateway got one zero base adapter and each version once, the
checkpoint dir holds exactly those versions, and the log has one line per step and per save.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from learner.checkpoint import complete_versions
from learner.config import LearnerConfig
from ledger.localbus import LocalBus
from ledger.records import TOPIC_SCORES, TOPIC_TURNS
from rlgw.config import Settings
from tests.fixtures.drill_learner import scored_episodes
from tests.fixtures.drills import Gateway, Proc, gateway_on_fake_replica, stopping, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EPISODES, PER_STEP = 12, 4


def write_scored_episodes(settings: Settings, n: int) -> None:
    """The turns and scores of `n` episodes on the learner's local log, as a gateway and a
    rubric worker would have recorded them."""
    cfg = settings.ledger
    bus = LocalBus(settings.data_dir / "ledger" / "log.sqlite", partitions=cfg.local_partitions)
    items = scored_episodes(n).items
    bus.publish(
        cfg.topic_prefix + TOPIC_TURNS, [(t.key, t.to_bytes()) for i in items for t in i.episode.turns]
    )
    bus.publish(cfg.topic_prefix + TOPIC_SCORES, [(i.score.key, i.score.to_bytes()) for i in items])
    bus.close()


def events(gw: Gateway) -> list[dict[str, str]]:
    body = httpx.get(gw.root + "/admin/versions/events", timeout=5).json()
    return [{"event": e["event"], "version": e["version"]} for e in body["events"]]


def test_two_ranks_train_and_rank_0_alone_saves_and_publishes(tmp_path: Path, tiny_model_dir: Path) -> None:
    data_dir = tmp_path / "learner-data"
    write_scored_episodes(Settings(data_dir=data_dir), EPISODES)
    env = {
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "RLGW_LEARNER__MODEL": str(tiny_model_dir),
        "RLGW_LEARNER__DEVICE": "cpu",
        "RLGW_LEARNER__LR": "1e-2",
        "RLGW_LEARNER__LORA_TARGETS": json.dumps([*LearnerConfig().lora_targets, "lm_head"]),
        "RLGW_LEARNER__BATCH_EPISODES": str(PER_STEP),
        "RLGW_LEARNER__STEPS_PER_VERSION": "1",
        "RLGW_LEARNER__POLL_INTERVAL_S": "0.2",
    }
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "torchrun"), "--standalone", "--nnodes=1", "--nproc-per-node=2", "--no-python"]
    cmd += [str(bin_dir / "rlgw"), "learner", "--data-dir", str(data_dir)]
    with stopping([]) as procs:
        gw = gateway_on_fake_replica(tmp_path, procs)
        t0 = time.monotonic()
        learner = Proc("learner", [*cmd, "--gateway", gw.root], tmp_path / "learner.log", env).start()
        procs.append(learner)

        def three_loaded() -> bool:
            assert learner.alive, learner.log_tail()
            return sum(e["event"] == "loaded" for e in events(gw)) >= EPISODES // PER_STEP

        wait_for(three_loaded, "three versions loaded", 600, 0.5)
        learner.stop(60)  # SIGTERM: torchrun passes it to both ranks, rank 0 tells rank 1 to stop
        took = time.monotonic() - t0
        got = events(gw)
        log = learner.log_path.read_text(errors="replace")

    saved = [s.version for s in complete_versions(data_dir / "learner")]
    loaded = [e["version"] for e in got if e["event"] == "loaded"]
    print(f"\n[torchrun learner, 2 ranks] saved {saved}, loaded {loaded}; {took:.1f} s to three versions")
    assert [v.split("-")[0] for v in saved] == ["v1", "v2", "v3"]  # one save per version, not one per rank
    assert loaded == saved  # each published once, in order
    assert sum(e["event"] == "base_adapter" for e in got) == 1  # one zero adapter: rank 0's
    assert len(list((data_dir / "learner" / "base-adapters").iterdir())) == 1
    windows = [s.data_window for s in complete_versions(data_dir / "learner")]
    assert [w["episodes"] for w in windows] == [PER_STEP] * 3
    assert [w["after"] for w in windows[1:]] == [w["until"] for w in windows[:-1]]
    # logs from rank 0 only: one line per step and per save
    assert log.count("learner step=") == 3 and log.count("learner saved v") == 3, log[-3000:]
