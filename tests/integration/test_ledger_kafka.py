"""KafkaBus against a real Kafka-protocol broker (tansu), read back with confluent-kafka too.

Fault test and why it is shaped so: the test broker keeps records in memory, so a broker that
stops loses what it had acknowledged. "All arrive once" is therefore checked per ack: every
record is acknowledged exactly once in all (by the old broker before it stopped, or by the new
one after the spool drained), and the new broker holds exactly the records the old one never
acknowledged — those waited in the disk spool across the outage.
"""

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from ledger import rejected
from ledger.config import LedgerConfig
from ledger.kafkabus import KafkaBus
from ledger.recorder import Recorder
from ledger.records import TOPIC_TURNS, DeadLetter, Turn, parse_record
from ledger.spool import Spool, SpoolItem
from ledger.writer import StoreWriter

pytestmark = pytest.mark.integration

_n = iter(range(1000))


def config(broker: Any, **kw: Any) -> LedgerConfig:
    return LedgerConfig(
        bus="kafka",
        bootstrap_servers=[broker.bootstrap],
        topic_prefix=f"t{next(_n)}-{int(time.time())}.",
        partitions=4,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        request_timeout_ms=2000,
        publish_timeout_ms=4000,
        **kw,
    )


def read_all(broker: Any, topic: str, expect: int, timeout_s: float = 30) -> list[Any]:
    """Read a topic with confluent-kafka, an independent client, until `expect` records."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "check", "enable.auto.commit": False})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])  # no group join: fast
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expect and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m)
    c.close()
    return out


def test_publish_is_read_by_an_independent_client_keyed_by_episode(broker: Any) -> None:
    cfg = config(broker)
    bus = KafkaBus(cfg)
    turns = [Turn(episode_id=f"ep{i % 5}", model="m", version="v1") for i in range(50)]
    bus.publish(cfg.topic_prefix + TOPIC_TURNS, [(t.key, t.to_bytes()) for t in turns])
    got = read_all(broker, cfg.topic_prefix + TOPIC_TURNS, 50)
    assert sorted(orjson.loads(m.value())["id"] for m in got) == sorted(t.id for t in turns)
    parts: dict[str, set[int]] = {}
    for m in got:
        parts.setdefault(m.key().decode(), set()).add(m.partition())
    assert all(len(p) == 1 for p in parts.values())  # one episode, one partition
    bus.close()


def test_publish_partitions_as_the_default_partitioner_and_keeps_key_order(broker: Any) -> None:
    """KafkaBus picks each record's partition itself; a plain kafka-python producer (the Java
    client's murmur2 partitioner) must agree, or one episode published by two clients would split."""
    from kafka import KafkaProducer

    cfg = config(broker)
    bus = KafkaBus(cfg)
    ours, theirs = cfg.topic_prefix + TOPIC_TURNS, cfg.topic_prefix + "feedback"
    items = [(f"ep-{i % 60}", f"ep-{i % 60}:{i // 60}".encode()) for i in range(600)]
    for i in range(0, len(items), 150):
        bus.publish(ours, items[i : i + 150])
    plain = KafkaProducer(bootstrap_servers=[broker.bootstrap])
    for k, v in items:
        plain.send(theirs, key=k.encode(), value=v)
    plain.flush()
    plain.close()
    got_ours, got_theirs = read_all(broker, ours, 600), read_all(broker, theirs, 600)
    assert len(got_ours) == len(got_theirs) == 600
    partition_of = {m.key(): m.partition() for m in got_theirs}
    assert {m.key(): m.partition() for m in got_ours} == partition_of
    assert len(set(partition_of.values())) == cfg.partitions
    seqs: dict[bytes, list[int]] = {}
    for m in got_ours:  # read_all yields each partition in offset order
        seqs.setdefault(m.key(), []).append(int(m.value().split(b":")[1]))
    assert all(s == list(range(10)) for s in seqs.values())  # per episode: published order, once each
    bus.close()


def test_a_short_poll_waits_for_the_group_join(broker: Any) -> None:
    """kafka-python drops a join that completes between two polls and rejoins; with short polls
    spaced by other work that could repeat forever (ledger/kafkaconsumer.py). poll() therefore
    returns only once this member has joined, however short its timeout."""
    cfg = config(broker)
    bus = KafkaBus(cfg)
    topic = cfg.topic_prefix + TOPIC_TURNS
    bus.publish(topic, [(f"k{i}", f"v{i}".encode()) for i in range(20)])
    c = bus.consumer([topic], f"short-polls-{cfg.topic_prefix}")
    assert c.joining
    seen = [m.value for m in c.poll(100, timeout_s=0.1)]
    assert not c.joining  # the tansu broker holds a JoinGroup ~3 s: far past the 0.1 s asked for
    deadline = time.monotonic() + 30
    while len(seen) < 20 and time.monotonic() < deadline:
        time.sleep(0.5)  # a worker's other work between polls
        seen += [m.value for m in c.poll(100, timeout_s=0.1)]
    assert sorted(seen) == sorted(f"v{i}".encode() for i in range(20))
    c.close()
    bus.close()


def test_consumer_group_commits_and_resumes(broker: Any) -> None:
    cfg = config(broker)
    bus = KafkaBus(cfg)
    topic = cfg.topic_prefix + TOPIC_TURNS
    bus.publish(topic, [(f"k{i}", f"v{i}".encode()) for i in range(20)])
    c = bus.consumer([topic], "g")
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen) < 20 and time.monotonic() < deadline:
        seen += [m.value for m in c.poll(100, timeout_s=1)]
    c.commit()
    c.close()
    bus.publish(topic, [("k", b"after")])
    c2 = bus.consumer([topic], "g")
    later: list[bytes] = []
    deadline = time.monotonic() + 30
    while not later and time.monotonic() < deadline:
        later += [m.value for m in c2.poll(100, timeout_s=1)]
    assert sorted(seen) == sorted(f"v{i}".encode() for i in range(20))
    assert later == [b"after"]
    c2.close()
    bus.close()


def test_broker_stops_while_10000_turns_are_recorded(broker: Any, tmp_path: Path) -> None:
    cfg = config(broker)
    topic = cfg.topic_prefix + TOPIC_TURNS
    acked: list[str] = []
    acked_lock = threading.Lock()
    phase = {"old": True}
    acked_by_old: list[str] = []

    def on_published(items: list[SpoolItem]) -> None:
        ids = [orjson.loads(v)["id"] for _, _, v in items]
        with acked_lock:
            acked.extend(ids)
            if phase["old"]:
                acked_by_old.extend(ids)

    bus = KafkaBus(cfg)
    spool = Spool(tmp_path / "spool")
    rec = Recorder(
        bus, topic_prefix=cfg.topic_prefix, capacity=1000, batch=500, spool=spool, on_published=on_published
    ).start()
    turns = [Turn(episode_id=f"ep{i % 97}", model="m", version="v1") for i in range(10_000)]
    for t in turns[:3000]:
        rec.record(TOPIC_TURNS, t)
    while len(acked) < 1000:
        time.sleep(0.01)
    broker.stop()  # mid-stream: some acked, some in flight, the rest not yet sent
    with acked_lock:
        phase["old"] = False
    for t in turns[3000:]:
        rec.record(TOPIC_TURNS, t)
    time.sleep(1.0)  # the pause: publishes fail, records spool
    assert spool.records > 0 or rec.pending > 0
    broker.start()  # a new, empty broker on the same port
    assert rec.flush(120)
    rec.close()
    bus.close()

    all_ids = {t.id for t in turns}
    assert len(acked) == 10_000 and set(acked) == all_ids  # every record acknowledged once
    on_new = [orjson.loads(m.value())["id"] for m in read_all(broker, topic, 10_000 - len(acked_by_old))]
    assert len(on_new) == len(set(on_new))  # the new broker holds each at most once
    assert set(on_new) == all_ids - set(acked_by_old)
    assert len(acked_by_old) >= 1000


def test_store_writer_from_kafka_with_garbage(broker: Any, store: Any) -> None:
    cfg = config(broker)
    bus = KafkaBus(cfg)
    turns = [Turn(episode_id=f"ep{i % 5}", model="m", version="v1") for i in range(200)]
    bus.publish(cfg.topic_prefix + TOPIC_TURNS, [(t.key, t.to_bytes()) for t in turns[:100]])
    bus.publish(cfg.topic_prefix + TOPIC_TURNS, [("ep0", b"{garbage")])
    bus.publish(cfg.topic_prefix + TOPIC_TURNS, [(t.key, t.to_bytes()) for t in turns[100:]])
    writer = StoreWriter(bus, store, topic_prefix=cfg.topic_prefix, batch=500, linger_s=1.0)
    deadline = time.monotonic() + 60
    while store.counts()["turns"] < 200 and time.monotonic() < deadline:
        writer.step()
    writer.close()
    assert store.counts()["turns"] == 200
    letters = read_all(broker, cfg.topic_prefix + "dead-letters", 1)
    assert len(letters) == 1
    assert isinstance(parse_record(letters[0].value()), DeadLetter)
    bus.close()


def test_a_record_over_the_size_limit_is_set_aside_not_retried_forever(broker: Any, tmp_path: Path) -> None:
    """Before, kafka-python's MessageSizeTooLargeError read as an outage: the recorder spooled
    the record and retried it, and every record behind it, forever."""
    cfg = config(broker, max_record_bytes=64 * 1024)
    bus = KafkaBus(cfg)
    rec = Recorder(bus, topic_prefix=cfg.topic_prefix, batch=100, spool=Spool(tmp_path / "spool")).start()
    turns = [Turn(episode_id=f"ep{i % 7}", model="m", version="v1") for i in range(200)]
    big = Turn(episode_id="ep-big", model="m", version="v1", metadata={"pad": "x" * 100_000})
    for i, t in enumerate(turns):
        rec.record(TOPIC_TURNS, t)
        if i == 100:
            rec.record(TOPIC_TURNS, big)
    assert rec.flush(60)
    rec.close()
    bus.close()
    got = read_all(broker, cfg.topic_prefix + TOPIC_TURNS, 200)
    assert sorted(orjson.loads(m.value())["id"] for m in got) == sorted(t.id for t in turns)
    kept = tmp_path / "spool" / "rejected" / f"{cfg.topic_prefix}turns.jsonl"
    assert kept.read_bytes() == big.to_bytes() + b"\n"
    [letter] = [parse_record(m.value()) for m in read_all(broker, cfg.topic_prefix + "dead-letters", 1)]
    assert isinstance(letter, DeadLetter) and letter.size == len(big.to_bytes())
    assert "max_request_size" in letter.reason

    # the limit raised (the default, 16 MiB): the kept record is replayed and arrives once
    roomy = KafkaBus(cfg.model_copy(update={"max_record_bytes": LedgerConfig().max_record_bytes}))
    assert rejected.replay(kept.parent, roomy).sent == {cfg.topic_prefix + TOPIC_TURNS: 1}
    roomy.close()
    after = read_all(broker, cfg.topic_prefix + TOPIC_TURNS, 201)
    assert sorted(orjson.loads(m.value())["id"] for m in after) == sorted(t.id for t in [*turns, big])
    assert [m.key() for m in after if orjson.loads(m.value())["id"] == big.id] == [b"ep-big"]
    assert not kept.exists()


def test_a_consumer_gets_past_a_record_larger_than_its_fetch_size(broker: Any) -> None:
    """Records up to ledger.max_record_bytes (16 MiB) are produced; kafka-python fetches 1 MiB
    per partition by default, so a group member must still make progress past a 3 MB turn."""
    cfg = config(broker)  # one key: one partition, in order
    bus = KafkaBus(cfg)
    big = Turn(episode_id="e", model="m", version="v1", metadata={"pad": "y" * 3_000_000})
    turns = [
        Turn(episode_id="e", model="m", version="v1"),
        big,
        Turn(episode_id="e", model="m", version="v1"),
    ]
    bus.publish(cfg.topic_prefix + TOPIC_TURNS, [(t.key, t.to_bytes()) for t in turns])
    consumer = bus.consumer([cfg.topic_prefix + TOPIC_TURNS], "big")
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < 3 and time.monotonic() < deadline:
        got += [m.value for m in consumer.poll(100, timeout_s=2)]
    assert got == [t.to_bytes() for t in turns]
    consumer.close()
    bus.close()
