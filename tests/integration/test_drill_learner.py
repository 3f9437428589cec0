"""Drill: the learner is SIGKILLed mid-save and mid-publish, then restarted.

A learner process (tests/fixtures/drill_learner.py: `run_learner` on fixed scored episodes,
the tiny model, publishing over HTTP) in front of an `rlgw gateway` process with a fake
replica. Killed once just before a version's COMPLETE marker (everything else written) and
once just before it publishes a saved version: neither a half-written version is listed by
the checkpoint dir (`complete_versions`) nor anything unpublished registered in the gateway.
The third start resumes the saved version, re-publishes it, trains and publishes the next.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from learner.checkpoint import TMP_PREFIX, complete_versions, versions_dir
from tests.fixtures.drills import Gateway, Proc, gateway_on_fake_replica, stopping, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def learner(data_dir: Path, gw: Gateway, model: Path, *extra: str) -> Proc:
    cmd = [sys.executable, "-m", "tests.fixtures.drill_learner", "--data-dir", str(data_dir)]
    cmd += ["--gateway", gw.root, "--model", str(model), *extra]
    env = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return Proc("learner", cmd, data_dir.parent / "learner.log", env).start()


def registered(gw: Gateway) -> list[str]:
    body = httpx.get(gw.root + "/admin/versions", timeout=5).json()
    return [v["id"] for v in body["versions"] if v["id"].startswith("v")]


def killed_when_paused(proc: Proc, flag: Path) -> None:
    wait_for(lambda: flag.exists() or not proc.alive, "the learner to reach the kill point", 120, 0.05)
    assert proc.alive, proc.log_tail()
    proc.kill()  # SIGKILL
    flag.unlink()


def test_learner_killed_mid_save_and_mid_publish_resumes(tmp_path: Path, tiny_model_dir: Path) -> None:
    data_dir = tmp_path / "learner-data"
    data_dir.mkdir()
    root = data_dir / "learner"
    flag = data_dir / "paused"
    with stopping([]) as procs:
        gw = gateway_on_fake_replica(tmp_path, procs)
        t0 = time.monotonic()

        # 1. killed mid-save: the version's files are written, its marker is not
        first = learner(data_dir, gw, tiny_model_dir, "--pause-at", "marker")
        procs.append(first)
        killed_when_paused(first, flag)
        half = [d.name for d in versions_dir(root).iterdir() if d.name.startswith(TMP_PREFIX)]
        after_save_kill = (len(half), [s.version for s in complete_versions(root)], registered(gw))

        # 2. killed mid-publish: the version is saved completely, the gateway has not got it
        second = learner(data_dir, gw, tiny_model_dir, "--pause-at", "publish")
        procs.append(second)
        killed_when_paused(second, flag)
        saved = [s.version for s in complete_versions(root)]
        after_publish_kill = (saved, registered(gw))

        # 3. restarted: resumes the saved version, re-publishes it, trains and publishes the next
        third = learner(data_dir, gw, tiny_model_dir, "--max-versions", "1")
        procs.append(third)
        assert third.popen is not None
        assert third.popen.wait(180) == 0, third.log_tail()
        report = json.loads(third.log_tail(2000).strip().splitlines()[-1])
        states = complete_versions(root)
        leftovers = [d.name for d in versions_dir(root).iterdir() if d.name.startswith(TMP_PREFIX)]
        print(
            f"\n[drill learner-sigkill] after the mid-save kill: temp dirs {after_save_kill[0]}, "
            f"complete versions {after_save_kill[1]}, registered {after_save_kill[2]}; after the "
            f"mid-publish kill: complete {after_publish_kill[0]}, registered {after_publish_kill[1]}; "
            f"restart: saved {report['versions']}, published {report['published']}, "
            f"registered {registered(gw)}, temp dirs left {len(leftovers)}; "
            f"drill {time.monotonic() - t0:.1f} s"
        )
        assert after_save_kill == (1, [], [])  # the half-written save exists, invisible to all
        (v1,) = after_publish_kill[0]
        assert v1.startswith("v1-") and after_publish_kill[1] == []
        (v2,) = report["versions"]
        assert v2.startswith("v2-")
        assert report["published"] == [v1, v2]
        assert [s.version for s in states] == [v1, v2] and states[1].parent == v1
        assert sorted(registered(gw)) == sorted([v1, v2])
        assert leftovers == []


def test_learner_killed_during_a_rollback_continues_from_what_serves(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """v1 serves, v2 is its canary; the learner, about to re-publish v2, is SIGKILLed while v2 is
    rolled back. Restarted, it continues from v1 and never publishes a descendant of v2."""
    data_dir = tmp_path / "learner-data"
    data_dir.mkdir()
    root = data_dir / "learner"
    flag = data_dir / "paused"
    with stopping([]) as procs:
        gw = gateway_on_fake_replica(tmp_path, procs)
        first = learner(data_dir, gw, tiny_model_dir, "--max-versions", "2")
        procs.append(first)
        assert first.popen is not None and first.popen.wait(180) == 0, first.log_tail()
        v1, v2 = (s.version for s in complete_versions(root))
        assert httpx.post(f"{gw.root}/admin/versions/{v1}/promote", timeout=10).status_code == 200
        wait_for(
            lambda: httpx.get(gw.root + "/admin/versions", timeout=5).json()["canary"] == v2, "v2's canary"
        )

        second = learner(data_dir, gw, tiny_model_dir, "--pause-at", "publish")
        procs.append(second)
        wait_for(lambda: flag.exists() or not second.alive, "the learner to reach the kill point", 120, 0.05)
        back = httpx.post(f"{gw.root}/admin/versions/{v2}/rollback", json={"reason": "drill"}, timeout=10)
        assert back.status_code == 200 and back.json()["serving"] == v1
        second.kill()  # SIGKILL, during the rollback
        flag.unlink()

        third = learner(data_dir, gw, tiny_model_dir, "--max-versions", "1")
        procs.append(third)
        assert third.popen is not None and third.popen.wait(180) == 0, third.log_tail()
        report = json.loads(third.log_tail(2000).strip().splitlines()[-1])
        (v3,) = report["versions"]
        listing = httpx.get(gw.root + "/admin/versions", timeout=5).json()["versions"]
        parents = {v["id"]: v["parent"] for v in listing}
        descendants = [v for v, p in parents.items() if p == v2]
        print(
            f"\n[drill learner-rollback] serving {v1}, rolled back {v2}; restarted learner saved "
            f"{report['versions']}, published {report['published']}; {v3}'s parent {parents.get(v3)}; "
            f"descendants of the rolled-back version published: {len(descendants)}"
        )
        assert report["published"] == [v3] and parents[v3] == v1 and descendants == []
        assert "off the fleet" in third.log_tail(20000)
