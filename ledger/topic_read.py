"""Reading a whole topic as it stands now, without a consumer group: a process rebuilding its
state from the ledger at start (the gateway's version registry, docs/versions.md).

`read_to_end(bus, topic)` returns every record on the topic at the time of the call, each
partition in offset order (records of one key, on one partition, stay in the order they were
written). It commits nothing and joins no group, so it takes no work from anyone. Each of the
three buses is read its own way: the memory bus's list, the local log's table, and Kafka by
assigning every partition and reading from the beginning to the end offsets taken first.
"""

from __future__ import annotations

import time
from typing import Any

from ledger.bus import Bus, BusUnavailable, MemoryBus, Message


def read_to_end(bus: Bus, topic: str, timeout_s: float = 10.0) -> list[Message]:
    """Every record of `topic` now; raises BusUnavailable when the bus cannot be read."""
    if isinstance(bus, MemoryBus):
        return bus.messages(topic)
    from ledger.localbus import LocalBus

    if isinstance(bus, LocalBus):
        return _read_local(bus, topic)
    from ledger.kafkabus import KafkaBus

    if isinstance(bus, KafkaBus):
        return _read_kafka(bus, topic, timeout_s)
    raise TypeError(f"cannot read a topic of {type(bus).__name__} without a group")


def _read_local(bus: Any, topic: str) -> list[Message]:
    out: list[Message] = []
    for part, end in sorted(bus.end_offsets(topic).items()):
        start = 0
        while start < end:
            with bus._lock:
                batch = bus._read(topic, part, start, min(5000, end - start))
            if not batch:
                break
            out.extend(batch)
            start = batch[-1].offset + 1
    return out


def _read_kafka(bus: Any, topic: str, timeout_s: float) -> list[Message]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    cfg = bus.cfg
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bus.servers,
            client_id=f"{bus.client_id}-replay",
            enable_auto_commit=False,
            request_timeout_ms=max(cfg.request_timeout_ms, cfg.session_timeout_ms + 5000),
            bootstrap_timeout_ms=cfg.request_timeout_ms,
        )
    except KafkaError as exc:
        raise BusUnavailable(f"kafka at {bus.servers} unreachable: {exc}") from exc
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        got: dict[int, list[Message]] = {tp.partition: [] for tp in tps}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise BusUnavailable(f"reading {topic} to its end took over {timeout_s:.0f} s")
            for tp, records in consumer.poll(timeout_ms=500, max_records=5000).items():
                for r in records:
                    if r.offset < ends[tp]:
                        key = r.key.decode() if r.key else ""
                        got[tp.partition].append(Message(topic, tp.partition, r.offset, key, r.value))
        return [m for p in sorted(got) for m in got[p]]
    except KafkaError as exc:
        raise BusUnavailable(f"reading {topic}: {exc!r}") from exc
    finally:
        consumer.close(autocommit=False)
