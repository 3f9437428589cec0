"""Threads that follow ledger topics for the gateway, each as its own consumer group.

    ScoreFeed    scores   → live reward per version (canary decisions, dashboards), and the
                            judges' probe runs (gateway/judge_alarms.py)
    TurnFeed     turns    → every gateway's request outcomes per version (turns and failed
                            calls), the episode → version stickiness, and the turn →
                            episode index for feedback
    VersionFeed  versions → routing state on a gateway that follows the controlling one

Each reads every record of its topic from the beginning (a unique group per process), so it
never takes work from rubric workers or store writers, and a restarted gateway holds the same
figures as before. `caught_up` is set at the first poll that drains what the topic holds (fewer
records than it asked for: under steady traffic a poll is never empty).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson

from gateway.drift import behaviour, zero_weight
from gateway.episodes import TurnIndex
from ledger.bus import Bus, BusError, Consumer, Message
from ledger.ids import new_id
from ledger.records import (
    TOPIC_SCORES,
    TOPIC_TURNS,
    TOPIC_VERSIONS,
    JudgeProbe,
    ModelVersion,
    Record,
    RecordError,
    Score,
    parse_record,
)

log = logging.getLogger(__name__)
POLL_RECORDS = 500


class Feed:
    topic = ""

    def __init__(self, bus: Bus, registry: Any, topic_prefix: str = "") -> None:
        self._bus, self.registry = bus, registry
        self._topic = topic_prefix + self.topic
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rlgw-{self.topic}-feed", daemon=True)

    def start(self) -> Feed:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def apply(self, record: Record) -> None:
        raise NotImplementedError

    def handle(self, message: Message) -> None:
        try:
            self.apply(parse_record(message.value))
        except RecordError:
            pass

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
                    messages = consumer.poll(POLL_RECORDS, 0.5)
                except BusError as exc:
                    log.warning("%s feed: %s", self.topic, exc)
                    self._stop.wait(1.0)
                    continue
                if len(messages) < POLL_RECORDS:
                    self.caught_up.set()
                for m in messages:
                    self.handle(m)
        finally:
            consumer.close()


class ScoreFeed(Feed):
    """Keeps the newest score per (episode, rubric) as that episode's reward for its version."""

    topic = TOPIC_SCORES

    def __init__(self, bus: Bus, registry: Any, topic_prefix: str = "") -> None:
        super().__init__(bus, registry, topic_prefix)
        self._seen: dict[tuple[str, str, str], int] = {}

    def apply(self, record: Record) -> None:
        if isinstance(record, JudgeProbe):
            self.registry.judges.observe(record)
        if not isinstance(record, Score):
            return
        key = (record.tenant, record.episode_id, record.rubric)  # tenants may reuse an episode id
        if self._seen.get(key, -1) > record.feedback_seq:
            return  # older than a score already applied
        self._seen[key] = record.feedback_seq
        self.registry.observe_score(record.version, "|".join(key), record.total, record.created_at)
        side = zero_weight(record.values, record.weights, record.rubric)
        self.registry.observe_side(record.version, "|".join(key), side, record.created_at)


class TurnFeed(Feed):
    """Every gateway's turns: request outcomes per version, which version each episode is on,
    and turn id → episode (read with orjson: a turn's pydantic model costs ~30 µs)."""

    topic = TOPIC_TURNS

    def __init__(self, bus: Bus, registry: Any, index: TurnIndex, topic_prefix: str = "") -> None:
        super().__init__(bus, registry, topic_prefix)
        self.index = index

    def handle(self, message: Message) -> None:
        try:
            d = orjson.loads(message.value)
            kind = d.get("kind")
            if kind == "failed_call":  # a call that left no turn: an error of its version
                latency = float(d.get("latency_ms") or 0.0)
                self.registry.observe_turn(d["version"], d["id"], False, latency, float(d["created_at"]))
                return
            if kind != "turn" or "exploration_of" in (d.get("metadata") or {}):
                return  # an episode end, or a completion the client never saw
            eid, tid, version = d["episode_id"], d["id"], d["version"]
            ok = int(d.get("status") or 200) < 400 and not d.get("error")
            latency, at = float(d.get("latency_ms") or 0.0), float(d["created_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return
        self.index.add(tid, eid, str(d.get("tenant") or "default"))
        self.registry.seen(eid, version)
        self.registry.observe_turn(version, tid, ok, latency, at)
        if ok:
            self.registry.observe_side(version, tid, behaviour(d), at)


class VersionFeed(Feed):
    """Applies the controlling gateway's version events to this gateway's router."""

    topic = TOPIC_VERSIONS

    def apply(self, record: Record) -> None:
        if isinstance(record, ModelVersion):
            self.registry.apply(record)
