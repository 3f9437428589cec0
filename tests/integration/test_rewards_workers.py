"""Rubric worker processes on the real buses: two share the stream, one is SIGKILLed mid-way.

Every closed episode must end with exactly one current Score per matching rubric (the newest
feedback position wins; replays reuse ids), and feedback after scoring must re-score.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger.bus import Bus
from ledger.config import LedgerConfig
from ledger.records import EpisodeEnd, Feedback, JudgeProbe, Score, Turn, TurnChoice, parse_record
from tests.fixtures.judge import honest, judge_in_thread

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUBRICS = """
[[rubric]]
name = "geo"
[[rubric.scorer]]
use = "contains"
reference = "expected"
[[rubric.scorer]]
use = "feedback"
weight = 0.5

[[rubric]]
name = "short"
[[rubric.scorer]]
use = "length_penalty"
max_chars = 20
"""
PREFIX = f"rw{uuid.uuid4().hex[:8]}."  # topics of its own: the session broker holds other tests' records
WORKER = "import typer; from rlgw.rubric_cmd import rubric_worker; typer.run(rubric_worker)"


def episode(i: int) -> list[tuple[str, Turn | EpisodeEnd]]:
    eid = f"ep-{i}"
    turns = [
        Turn(
            episode_id=eid,
            model="m",
            version="v1",
            metadata={"expected": "paris"},
            request={"messages": [{"role": "user", "content": f"question {i}, turn {k}"}]},
            choices=[TurnChoice(message={"role": "assistant", "content": "Paris" if i % 2 else "Lyon"})],
        )
        for k in range(2)
    ]
    return [("turns", t) for t in turns] + [("turns", EpisodeEnd(episode_id=eid))]


def start_worker(data_dir: Path, rubrics: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", WORKER, "--rubrics", str(rubrics), "--data-dir", str(data_dir)]
    env = {**os.environ, "RLGW_REWARDS__COMMIT_INTERVAL_S": "1e9", **env}
    env.pop("RLGW_CONFIG", None)
    log = (data_dir / f"worker-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(cond: Callable[[], bool], what: str, deadline_s: float = 180.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.2)


class ScoreLog:
    """Reads the scores topic as its own consumer group."""

    def __init__(self, bus: Bus) -> None:
        self.consumer = bus.consumer([PREFIX + "scores"], "test-reader")
        self.by_key: dict[tuple[str, str], list[Score]] = defaultdict(list)
        self.probes: list[JudgeProbe] = []  # the judge's scheduled probe runs (rewards/judge_watch.py)

    def read(self) -> dict[tuple[str, str], list[Score]]:
        while batch := self.consumer.poll(1000, 0.2):
            for m in batch:
                s = parse_record(m.value)
                if isinstance(s, JudgeProbe):
                    self.probes.append(s)
                    continue
                assert isinstance(s, Score)
                self.by_key[(s.episode_id, s.rubric)].append(s)
        return self.by_key


def run_scenario(bus: Bus, data_dir: Path, env: dict[str, str], n: int = 120) -> ScoreLog:
    rubrics = data_dir / "rubrics.toml"
    rubrics.write_text(RUBRICS)
    workers = [start_worker(data_dir, rubrics, env) for _ in range(2)]
    scores = ScoreLog(bus)
    try:
        for i in range(n):
            for topic, rec in episode(i):
                bus.publish(PREFIX + topic, [(rec.key, rec.to_bytes())])
            if i == n // 3:
                wait_for(lambda: len(scores.read()) >= 10, "first scores")
                os.kill(workers[0].pid, signal.SIGKILL)  # mid-stream, holding open episodes
                workers[0].wait()
        want = {(f"ep-{i}", r) for i in range(n) for r in ("geo", "short")}
        wait_for(lambda: want <= set(scores.read()), "a score for every closed episode")
        # episodes after the kill: the survivor holds them. (Late feedback for an episode whose
        # records only the dead worker saw needs the store: see test_rewards_worker's recovery test.)
        late = [Feedback(episode_id=f"ep-{i}", name="thumbs", value=False) for i in range(n // 2, n, 7)]
        bus.publish(PREFIX + "feedback", [(f.key, f.to_bytes()) for f in late])
        rescored = {(f.episode_id, "geo") for f in late}

        def all_rescored() -> bool:
            got = scores.read()
            return all(any(s.feedback_seq == 1 for s in got[k]) for k in rescored)

        wait_for(all_rescored, "re-scores after late feedback")
    finally:
        for w in workers:
            if w.poll() is None:
                os.kill(w.pid, signal.SIGTERM)
                w.wait(30)
    got = scores.read()
    assert set(got) == want
    for key, ss in got.items():
        newest = max(s.feedback_seq for s in ss)
        current = {s.id for s in ss if s.feedback_seq == newest}
        assert len(current) == 1, (key, ss)  # one current score, however often it was replayed
        (s,) = [s for s in ss if s.id in current][:1]
        assert s.values and s.errors == {}
        if key[0] in {eid for eid, _ in rescored}:  # every rubric re-scores on feedback
            assert newest == 1 and s.values.get("feedback", 0.0) == 0.0
            assert any(o.feedback_seq == 0 for o in ss)  # the earlier score is kept
        else:
            assert newest == 0
    return scores


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_two_worker_processes_on_the_local_bus(data_dir: Path) -> None:
    from ledger.localbus import LocalBus

    bus = LocalBus(data_dir / "ledger" / "log.sqlite", partitions=4)
    try:
        with judge_in_thread(honest) as judge:  # configured: each worker probes it at start
            env = {
                "RLGW_LEDGER__BUS": "local",
                "RLGW_LEDGER__LOCAL_PARTITIONS": "4",
                "RLGW_LEDGER__TOPIC_PREFIX": PREFIX,
                "RLGW_REWARDS__JUDGE_URL": judge,
                "RLGW_REWARDS__JUDGE_MODEL": "j",
            }
            scores = run_scenario(bus, data_dir, env)
        assert scores.probes  # each worker process probes the judge at its start
        assert all(p.judge == "config" and p.drift == [] and p.errors == 0 for p in scores.probes)
        assert {(p.false_positive_rate, p.control_pass_rate) for p in scores.probes} == {(0.0, 1.0)}
    finally:
        bus.close()


def kafka_scenario(bootstrap: str, data_dir: Path) -> None:
    from ledger.kafkabus import KafkaBus

    # the test's own reader joins its group quickly too (a join waits about half the session timeout)
    cfg = LedgerConfig(
        bootstrap_servers=[bootstrap],
        partitions=4,
        topic_prefix=PREFIX,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    bus = KafkaBus(cfg)
    try:
        bus.ensure_topics()
        env = {
            "RLGW_LEDGER__BUS": "kafka",
            "RLGW_LEDGER__TOPIC_PREFIX": PREFIX,
            "RLGW_LEDGER__BOOTSTRAP_SERVERS": f'["{bootstrap}"]',
            # the dead member's partitions move to the survivor once its session expires
            "RLGW_LEDGER__SESSION_TIMEOUT_MS": "6000",
            "RLGW_LEDGER__HEARTBEAT_INTERVAL_MS": "1000",
        }
        run_scenario(bus, data_dir, env)
    finally:
        bus.close()


@pytest.mark.timeout(600)
def test_two_worker_processes_on_kafka(data_dir: Path, fresh_broker: object) -> None:
    # Its stall (workers and the score reader rejoining their groups round after round) was
    # kafka-python dropping group joins that complete between polls: see ledger/kafkaconsumer.py.
    # The test's own Kafka clients run in a fresh interpreter, clear of the session's others.
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=kafka_scenario, args=(fresh_broker.bootstrap, data_dir))  # type: ignore[attr-defined]
    proc.start()
    proc.join(540)
    if proc.is_alive():
        proc.kill()
    assert proc.exitcode == 0, f"the scenario failed (exit {proc.exitcode}); see its traceback above"
