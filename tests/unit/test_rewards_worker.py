"""The rubric worker on the MemoryBus: when episodes are scored, re-scores, replays, outages."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from ledger.bus import MemoryBus
from ledger.memstore import MemoryStore
from ledger.records import EpisodeEnd, Feedback, Record, Score, Turn, TurnChoice, parse_record
from rewards import EpisodeView, Rubric, metric, reward
from rewards.metrics import WorkerMetrics
from rewards.worker import RubricWorker, run_worker
from rlgw.config import load_settings


@reward(inline=True)
def says_paris(ep: EpisodeView) -> float:
    return float("paris" in ep.final_answer.lower())


@reward(weight=0.5, inline=True)
def thumbs(ep: EpisodeView) -> float | None:
    return float(ep.feedback[-1].value) if ep.feedback else None  # type: ignore[arg-type]


@metric
def boom(ep: EpisodeView) -> float:
    raise RuntimeError("bad rollout")


GEO = Rubric("geo", [says_paris, thumbs, boom], match={"task": "geo"})
ALL = Rubric("all", [says_paris])
MATH = Rubric("math", [says_paris], match={"task": "math"})


def turn(eid: str, answer: str = "Paris", task: str = "geo") -> Turn:
    return Turn(
        episode_id=eid,
        model="m",
        version="v1",
        task=task,
        request={"messages": [{"role": "user", "content": "capital of France?"}]},
        choices=[TurnChoice(message={"role": "assistant", "content": answer})],
    )


def publish(bus: MemoryBus, *records: Record) -> None:
    for r in records:
        topic = "feedback" if isinstance(r, Feedback) else "turns"
        bus.publish(topic, [(r.key, r.to_bytes())])


def scores(bus: MemoryBus) -> list[Score]:
    return [s for m in bus.messages("scores") if isinstance(s := parse_record(m.value), Score)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def worker(bus: MemoryBus, clock: Clock | None = None, **kw: object) -> RubricWorker:
    return RubricWorker([GEO, ALL, MATH], bus, clock=clock or Clock(), idle_timeout_s=60, **kw)  # type: ignore[arg-type]


async def test_closed_episodes_get_one_score_per_matching_rubric() -> None:
    bus = MemoryBus()
    publish(bus, turn("a"), turn("a", "Lyon"), EpisodeEnd(episode_id="a"))
    publish(bus, turn("b", "Paris"), Feedback(episode_id="b", name="thumbs", value=True, done=True))
    publish(bus, turn("open"))
    w = worker(bus)
    await w.step(timeout_s=0)
    got = Counter((s.episode_id, s.rubric) for s in scores(bus))
    assert got == {("a", "geo"): 1, ("a", "all"): 1, ("b", "geo"): 1, ("b", "all"): 1}
    a = next(s for s in scores(bus) if s.episode_id == "a" and s.rubric == "geo")
    assert a.values["says_paris"] == 0.0 and a.errors["boom"] == "RuntimeError: bad rollout"
    b = next(s for s in scores(bus) if s.episode_id == "b" and s.rubric == "geo")
    assert b.total == 1.5 and b.feedback_seq == 1


async def test_late_feedback_rescores_and_the_newest_wins() -> None:
    bus = MemoryBus()
    publish(bus, turn("a"), EpisodeEnd(episode_id="a"))
    w = worker(bus)
    await w.step(timeout_s=0)
    publish(bus, Feedback(episode_id="a", name="thumbs", value=False))
    await w.step(timeout_s=0)
    geo = [s for s in scores(bus) if s.rubric == "geo"]
    assert [(s.feedback_seq, s.total) for s in geo] == [(0, 1.0), (1, 1.0)]
    assert geo[1].values["thumbs"] == 0.0 and geo[0].id != geo[1].id


async def test_idle_episodes_are_closed_scored_and_ended() -> None:
    bus, clock = MemoryBus(), Clock()
    publish(bus, turn("a"))
    w = worker(bus, clock)
    await w.step(timeout_s=0)
    assert scores(bus) == []
    clock.now = 61.0
    await w.step(timeout_s=0)
    assert {s.rubric for s in scores(bus)} == {"geo", "all"}
    ends = [r for m in bus.messages("turns") if isinstance(r := parse_record(m.value), EpisodeEnd)]
    assert [(e.episode_id, e.reason) for e in ends] == [("a", "idle")]
    await w.step(timeout_s=0)  # its own EpisodeEnd comes back: nothing new to score
    assert len(scores(bus)) == 2


async def test_a_replay_after_a_crash_republishes_the_same_ids() -> None:
    bus = MemoryBus()
    publish(bus, turn("a"), EpisodeEnd(episode_id="a"), turn("b"))
    first = worker(bus, commit_interval_s=1e9)
    await first.step(timeout_s=0)  # scores a; b is open, so nothing is committed
    del first  # "crash"
    publish(bus, EpisodeEnd(episode_id="b"))
    second = worker(bus, commit_interval_s=1e9)
    await second.step(timeout_s=0)
    ids = {(s.episode_id, s.rubric): set() for s in scores(bus)}  # type: ignore[var-annotated]
    for s in scores(bus):
        ids[(s.episode_id, s.rubric)].add(s.id)
    assert set(ids) == {("a", "geo"), ("a", "all"), ("b", "geo"), ("b", "all")}
    assert all(len(v) == 1 for v in ids.values())  # a was published twice, with the same ids
    third = worker(bus)
    assert await third.step(timeout_s=0) == 0  # everything was committed once nothing was open


async def test_no_commit_until_scores_are_published() -> None:
    bus = MemoryBus()
    publish(bus, turn("a"), EpisodeEnd(episode_id="a"))
    w = worker(bus)
    bus.available = False
    assert await w.step(timeout_s=0) == 0
    assert worker(bus).consumer.poll(10, 0)  # nothing committed: another member would redo it
    bus.available = True
    assert await w.step(timeout_s=0) == 2  # the due scores are retried
    assert worker(bus).consumer.poll(10, 0) == []


async def test_bad_records_are_skipped_and_counted() -> None:
    bus = MemoryBus()
    bus.publish("turns", [("x", b"not json"), ("y", b'{"kind": "turn"}')])
    publish(bus, turn("a"), EpisodeEnd(episode_id="a"))
    registry = CollectorRegistry()
    w = worker(bus, metrics=WorkerMetrics(registry))
    assert await w.step(timeout_s=0) == 2
    assert registry.get_sample_value("rlgw_rubric_bad_records_total") == 2
    labels = {"rubric": "geo", "function": "boom"}
    assert registry.get_sample_value("rlgw_reward_function_errors_total", labels) == 1
    labels = {"rubric": "geo", "function": "says_paris"}
    assert registry.get_sample_value("rlgw_reward_function_value_count", labels) == 1
    assert registry.get_sample_value("rlgw_rubric_scores_total", {"rubric": "all"}) == 1


def test_run_worker_in_a_thread_until_stopped() -> None:
    bus = MemoryBus()
    settings = load_settings(None, **{"ledger.topic_prefix": "t."})
    bus.publish("t.turns", [("a", turn("a").to_bytes()), ("a", EpisodeEnd(episode_id="a").to_bytes())])
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(settings, bus, stop), kwargs={"rubrics": [GEO]})
    thread.start()
    try:
        with bus._lock:
            bus._lock.wait_for(lambda: bus._logs["t.scores"], timeout=30)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    (s,) = [parse_record(m.value) for m in bus.messages("t.scores")]
    assert isinstance(s, Score) and s.rubric == "geo"


def test_run_worker_needs_rubrics() -> None:
    with pytest.raises(ValueError, match="no rubrics"):
        run_worker(load_settings(), MemoryBus(), threading.Event())


async def test_feedback_for_an_episode_it_never_saw_is_scored_from_the_store() -> None:
    """After a crash or an eviction, late feedback finds the episode's turns in the store."""
    store = MemoryStore()
    store.write([turn("gone"), EpisodeEnd(episode_id="gone")])
    bus = MemoryBus()
    publish(bus, Feedback(episode_id="gone", name="thumbs", value=True))
    w = worker(bus, source=store)
    assert await w.step(timeout_s=0) == 2
    geo = next(s for s in scores(bus) if s.rubric == "geo")
    assert geo.feedback_seq == 1 and geo.total == 1.5
    publish(bus, Feedback(episode_id="never", name="thumbs", value=True, done=True))
    assert await w.step(timeout_s=0) == 0  # nothing anywhere to score: no crash either


async def test_tenants_sharing_an_episode_id_never_merge() -> None:
    """Clients choose episode ids: two tenants may use one. Their episodes are scored apart,
    and one tenant's feedback on that id never touches the other's episode."""
    store = MemoryStore()
    a_turn, b_turn = turn("shared"), turn("shared", "Lyon")
    a_turn.tenant, b_turn.tenant = "a", "b"
    store.write([a_turn, b_turn])
    bus = MemoryBus()
    publish(bus, a_turn, b_turn, EpisodeEnd(episode_id="shared", tenant="a"))
    publish(bus, EpisodeEnd(episode_id="shared", tenant="b"))
    w = worker(bus, source=store)
    await w.step(timeout_s=0)
    geo = {s.tenant: s for s in scores(bus) if s.rubric == "geo"}
    assert set(geo) == {"a", "b"} and geo["a"].id != geo["b"].id
    assert geo["a"].values["says_paris"] == 1.0 and geo["b"].values["says_paris"] == 0.0
    # tenant c names tenant a's episode id: it lands in c's own (empty) episode
    publish(bus, Feedback(episode_id="shared", tenant="c", name="thumbs", value=False, done=True))
    assert await w.step(timeout_s=0) == 0
    st = w.book.get("shared", "a")
    assert st is not None and st.feedback == 0 and len(st.episode.turns) == 1
