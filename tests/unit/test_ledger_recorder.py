import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from ledger import rejected
from ledger.bus import BusUnavailable, MemoryBus
from ledger.recorder import Recorder
from ledger.records import TOPIC_FEEDBACK, TOPIC_TURNS, DeadLetter, Feedback, Turn, parse_record
from ledger.spool import Spool


def turn(i: int) -> Turn:
    return Turn(episode_id=f"ep{i % 5}", model="m", version="v1", metadata={"i": i})


def order(bus: MemoryBus, topic: str = "p.turns") -> list[int]:
    return [parse_record(m.value).metadata["i"] for m in bus.messages(topic)]  # type: ignore[attr-defined]


def test_records_reach_the_bus_with_the_prefix() -> None:
    bus = MemoryBus()
    rec = Recorder(bus, topic_prefix="p.").start()
    for i in range(100):
        rec.record(TOPIC_TURNS, turn(i))
    rec.record(TOPIC_FEEDBACK, Feedback(episode_id="ep1", name="thumbs", value=True))
    assert rec.flush(10)
    assert order(bus) == list(range(100))
    assert len(bus.messages("p.feedback")) == 1
    rec.close()


def test_outage_spools_then_drains_in_order(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.available = False
    rec = Recorder(bus, topic_prefix="p.", capacity=50, batch=20, spool=Spool(tmp_path)).start()
    for i in range(300):
        rec.record(TOPIC_TURNS, turn(i))
    assert rec.pending == 300
    bus.available = True
    assert rec.flush(20)
    assert order(bus) == list(range(300))
    assert rec.spilled > 0
    rec.close()


def test_full_queue_spills_without_blocking_and_keeps_order(tmp_path: Path) -> None:
    bus = MemoryBus()
    rec = Recorder(bus, topic_prefix="p.", capacity=10, batch=7, spool=Spool(tmp_path))
    for i in range(200):  # not started yet: the queue fills, the rest goes to the overflow
        rec.record(TOPIC_TURNS, turn(i))
    rec.start()
    assert rec.flush(20)
    assert order(bus) == list(range(200))
    rec.close()


def test_a_restarted_recorder_drains_its_predecessors_spool(tmp_path: Path) -> None:
    down = MemoryBus()
    down.available = False
    first = Recorder(down, topic_prefix="p.", spool=Spool(tmp_path)).start()
    for i in range(40):
        first.record(TOPIC_TURNS, turn(i))
    first.close(timeout_s=2)  # the bus never came back: everything is on disk

    bus = MemoryBus()
    second = Recorder(bus, topic_prefix="p.", spool=Spool(tmp_path)).start()
    second.record(TOPIC_TURNS, turn(40))
    assert second.flush(10)
    assert order(bus) == list(range(41))
    second.close()


def test_many_threads_record_while_the_bus_flaps(tmp_path: Path) -> None:
    bus = MemoryBus()
    rec = Recorder(bus, topic_prefix="p.", capacity=100, batch=50, spool=Spool(tmp_path)).start()

    def worker(n: int) -> None:
        for i in range(500):
            rec.record(TOPIC_TURNS, turn(n * 1000 + i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for k in range(20):
        bus.available = k % 2 == 0
        threading.Event().wait(0.005)
    bus.available = True
    for t in threads:
        t.join()
    assert rec.flush(20)
    got = order(bus)
    assert sorted(set(got)) == sorted(n * 1000 + i for n in range(4) for i in range(500))
    for n in range(4):  # each thread's records stay in its order
        mine = [i for i in got if i // 1000 == n]
        assert mine == sorted(mine)
    rec.close()


def test_a_record_the_bus_rejects_is_set_aside_and_the_rest_flows_on(tmp_path: Path) -> None:
    bus = MemoryBus(max_record_bytes=3000)
    rec = Recorder(bus, topic_prefix="p.", batch=50, spool=Spool(tmp_path)).start()
    big = Turn(episode_id="ep9", model="m", version="v1", metadata={"i": 5, "pad": "x" * 5000})
    for i in range(10):
        rec.record(TOPIC_TURNS, big if i == 5 else turn(i))
    assert rec.flush(10)  # not retried forever
    assert order(bus) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert rec.rejected == 1 and rec.pending == 0
    kept = (tmp_path / "rejected" / "p.turns.jsonl").read_bytes()
    assert parse_record(kept.rstrip(b"\n")) == big  # the whole record, recoverable
    [letter] = [parse_record(m.value) for m in bus.messages("p.dead-letters")]
    assert isinstance(letter, DeadLetter) and letter.topic == "p.turns"
    assert letter.size == len(big.to_bytes()) and letter.kept_in == str(
        tmp_path / "rejected" / "p.turns.jsonl"
    )
    assert "over the limit" in letter.reason and letter.payload.startswith('{"')
    rec.close()


def test_kept_records_are_replayed_and_those_still_refused_stay(tmp_path: Path) -> None:
    bus = MemoryBus(max_record_bytes=3000)
    rec = Recorder(bus, topic_prefix="p.", spool=Spool(tmp_path)).start()
    big = Turn(episode_id="ep8", model="m", version="v1", metadata={"i": 8, "pad": "x" * 5000})
    huge = Turn(episode_id="ep9", model="m", version="v1", metadata={"i": 9, "pad": "x" * 50_000})
    rec.record(TOPIC_TURNS, big)
    rec.record(TOPIC_TURNS, huge)
    assert rec.flush(10) and rec.rejected == 2
    kept = tmp_path / "rejected"
    bus.max_record_bytes = 10_000  # the limit raised: big fits now, huge still does not
    done = rejected.replay(kept, bus)
    assert done.sent == {"p.turns": 1} and len(done.refused["p.turns"]) == 1
    assert order(bus) == [8]
    assert [m.key for m in bus.messages("p.turns")] == ["ep8"]  # keyed by episode, as recorded
    assert [parse_record(x) for x in (kept / "p.turns.jsonl").read_bytes().splitlines()] == [huge]
    assert not list(kept.glob("*.replaying"))
    rec.close()


def test_a_replay_cut_short_by_an_outage_resumes_where_it_stopped(tmp_path: Path) -> None:
    kept = tmp_path / "rejected"
    turns = [turn(i) for i in range(250)]
    rejected.keep(kept, "p.turns", [t.to_bytes() for t in turns])

    class DownAfterItsFirstBatch(MemoryBus):
        def publish(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
            super().publish(topic, items)
            if len(self.messages(topic)) == 100:
                self.available = False  # the next publish finds the bus down

    bus = DownAfterItsFirstBatch()
    with pytest.raises(BusUnavailable):
        rejected.replay(kept, bus, batch=100)
    assert order(bus) == list(range(100))
    rejected.keep(kept, "p.turns", [turn(999).to_bytes()])  # a new rejection meanwhile
    bus.available = True
    assert rejected.replay(kept, bus, batch=100).sent == {"p.turns": 151}
    assert order(bus) == [*range(250), 999]  # each once, the unsent rest first
    assert not list(kept.iterdir())
