"""Threads that follow ledger topics for the gateway, each as its own consumer group.

    ScoreFeed    scores   → live reward per version (the controlling gateway's decisions)
    VersionFeed  versions → routing state on a gateway that follows the controlling one

Each reads every record of its topic (a unique group per process), so it never takes work
from rubric workers or store writers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ledger.bus import Bus, BusError, Consumer
from ledger.ids import new_id
from ledger.records import (
    TOPIC_SCORES,
    TOPIC_VERSIONS,
    ModelVersion,
    Record,
    RecordError,
    Score,
    parse_record,
)

log = logging.getLogger(__name__)


class Feed:
    topic = ""

    def __init__(self, bus: Bus, registry: Any, topic_prefix: str = "") -> None:
        self._bus, self.registry = bus, registry
        self._topic = topic_prefix + self.topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rlgw-{self.topic}-feed", daemon=True)

    def start(self) -> Feed:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def apply(self, record: Record) -> None:
        raise NotImplementedError

    def _connect(self) -> Consumer | None:
        """The feed's consumer; while the bus is down (a gateway started during an outage), retry."""
        group = f"rlgw-gateway-{self.topic}-{new_id()}"
        while not self._stop.is_set():
            try:
                return self._bus.consumer([self._topic], group)
            except BusError as exc:
                log.warning("%s feed: %s; retrying", self.topic, exc)
                self._stop.wait(2.0)
        return None

    def _run(self) -> None:
        consumer = self._connect()
        if consumer is None:
            return
        try:
            while not self._stop.is_set():
                try:
                    messages = consumer.poll(500, 0.5)
                except BusError as exc:
                    log.warning("%s feed: %s", self.topic, exc)
                    self._stop.wait(1.0)
                    continue
                for m in messages:
                    try:
                        self.apply(parse_record(m.value))
                    except RecordError:
                        continue
        finally:
            consumer.close()


class ScoreFeed(Feed):
    """Keeps the newest score per (episode, rubric) as that episode's reward for its version."""

    topic = TOPIC_SCORES

    def __init__(self, bus: Bus, registry: Any, topic_prefix: str = "") -> None:
        super().__init__(bus, registry, topic_prefix)
        self._seen: dict[tuple[str, str, str], int] = {}

    def apply(self, record: Record) -> None:
        if not isinstance(record, Score):
            return
        key = (record.tenant, record.episode_id, record.rubric)  # tenants may reuse an episode id
        if self._seen.get(key, -1) > record.feedback_seq:
            return  # older than a score already applied
        self._seen[key] = record.feedback_seq
        self.registry.observe_score(record.version, "|".join(key), record.total)


class VersionFeed(Feed):
    """Applies the controlling gateway's version events to this gateway's router."""

    topic = TOPIC_VERSIONS

    def apply(self, record: Record) -> None:
        if isinstance(record, ModelVersion):
            self.registry.apply(record)
