"""The Kafka consumer of the bus: a member of a consumer group, committing by hand.

Auto-commit is off: `commit()` stores the positions handed out by `poll()`, which callers do
after their work is durable (at-least-once).

Group joins, and why `poll()` waits for them. kafka-python 3.0 runs a JoinGroup/SyncGroup round
as a task that only a running `poll()` collects. A round that completes while no `poll()` is
running (the caller is busy, or pausing between polls) is dropped on the next `poll()`, which
sends a new JoinGroup: a new rebalance for every member of the group. A broker holds each
JoinGroup a while (tansu about half the session timeout, Kafka its initial rebalance delay), so
a member whose polls are short and spaced can land outside every round and rejoin forever,
holding no partition and fetching nothing. Measured on tansu: polls of 0.5 s with 0.75 s of
other work between them went 64 rounds (240 s) without a record; in the rubric workers' Kafka
drill the score reader needed up to 10 rounds (~30 s) and workers rejoined after rebalances.
So while this member is (re)joining, `poll()` keeps polling, back to back, until the round
completes or `join_wait_s` (twice the session timeout) has passed. A rebalance listener tells
when a round starts (partitions revoked or lost) and ends (partitions assigned).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError

from ledger.bus import BusUnavailable, Message

if TYPE_CHECKING:
    from ledger.kafkabus import KafkaBus

log = logging.getLogger(__name__)

POLL_SLICE_S = 0.2  # while joining: the longest single wait inside kafka-python's poll


class _JoinWatch(ConsumerRebalanceListener):
    """Whether this member is in a group join: from its start until the partitions are assigned."""

    def __init__(self) -> None:
        self.joining = True  # not a member before the first join

    def on_partitions_revoked(self, revoked: Any) -> None:  # also called for lost partitions
        self.joining = True

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.joining = False


class KafkaBusConsumer:
    def __init__(self, bus: KafkaBus, topics: list[str], group: str) -> None:
        c = bus.cfg
        self.group = group
        self.join_wait_s = 2 * c.session_timeout_ms / 1000
        self._watch = _JoinWatch()
        opts: dict[str, Any] = dict(
            bootstrap_servers=bus.servers,
            group_id=group,
            client_id=f"{bus.client_id}-{group}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            request_timeout_ms=max(c.request_timeout_ms, c.session_timeout_ms + 5000),
            bootstrap_timeout_ms=c.request_timeout_ms,
        )
        try:
            self._consumer = KafkaConsumer(**opts)
            self._consumer.subscribe(topics, listener=self._watch)
        except KafkaError as exc:
            raise BusUnavailable(f"kafka at {bus.servers} unreachable: {exc}") from exc

    @property
    def joining(self) -> bool:
        """True from the start of a group join until this member has its partitions."""
        return self._watch.joining

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        """Records after this member's positions, waiting up to `timeout_s` for some, and while
        a group join is under way, for the join too (at most `join_wait_s`): see the module doc."""
        now = time.monotonic()
        deadline = now + timeout_s
        join_deadline = now + max(timeout_s, self.join_wait_s)
        while True:
            until = join_deadline if self.joining else deadline
            wait_s = min(until - now, max(deadline - now, POLL_SLICE_S))
            try:
                got = self._consumer.poll(timeout_ms=max(0, int(wait_s * 1000)), max_records=max_records)
            except KafkaError as exc:
                raise BusUnavailable(f"kafka poll failed: {exc!r}") from exc
            now = time.monotonic()
            if got or now >= (join_deadline if self.joining else deadline):
                break
        if self.joining and now >= join_deadline:
            log.warning("group %s: still joining after %.0f s", self.group, self.join_wait_s)
        out: list[Message] = []
        for tp, records in got.items():
            for r in records:
                key = r.key.decode() if r.key else ""
                out.append(Message(tp.topic, tp.partition, r.offset, key, r.value))
        return out

    def commit(self) -> None:
        try:
            self._consumer.commit()
        except KafkaError as exc:
            raise BusUnavailable(f"kafka commit failed: {exc!r}") from exc

    def close(self) -> None:
        self._consumer.close(autocommit=False)
