"""The versions topic as the registry's source of truth: write an event durably, read them all.

Every change of the version registry is a ModelVersion event. The controlling gateway writes
it here *before* applying it (gateway/versions.py), so a change that a caller or a router has
seen is on the ledger: a SIGKILL cannot lose it. Every event is published under one key
(`VERSIONS_KEY`), so all of them land on one partition in the order they were made, and any
gateway replays them in that order (docs/versions.md).

Without a bus (a gateway built for a benchmark or a unit test without one), events go through
the recorder: in order, but acknowledged before they are durable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.errors import NoReplica
from ledger.bus import Bus, BusError
from ledger.recorder import Recorder
from ledger.records import TOPIC_VERSIONS, ModelVersion, Record, RecordError, parse_record
from ledger.topic_read import read_to_end

log = logging.getLogger(__name__)

VERSIONS_KEY = "rlgw-versions"  # one key: one partition, one order for every version event


class VersionLogUnavailable(NoReplica):
    """The versions topic cannot take an event now: the change is not made (503)."""


class VersionLog:
    def __init__(self, bus: Bus | None, recorder: Recorder, topic_prefix: str = "") -> None:
        self.bus, self.recorder = bus, recorder
        self.topic = topic_prefix + TOPIC_VERSIONS

    def append(self, events: Sequence[ModelVersion]) -> None:
        """Returns once `events` are durable on the versions topic (the bus acknowledged them)."""
        if self.bus is None:
            for e in events:
                self.recorder.record(TOPIC_VERSIONS, e)
            return
        try:
            self.bus.publish(self.topic, [(VERSIONS_KEY, e.to_bytes()) for e in events])
        except BusError as exc:
            raise VersionLogUnavailable(
                f"the versions topic cannot be written: {exc}", code="version_log_unavailable"
            ) from exc

    def history(self, timeout_s: float = 10.0) -> list[ModelVersion]:
        """Every version event on the topic, in the order they were made."""
        if self.bus is None:
            return []
        messages = read_to_end(self.bus, self.topic, timeout_s)
        out = [rec for m in messages if isinstance(rec := _parse(m.value), ModelVersion)]
        if len({m.partition for m in messages}) > 1:  # events written before VERSIONS_KEY
            out.sort(key=lambda e: e.created_at)  # stable: one partition's order stays
        return out


def _parse(data: bytes) -> Record | None:
    try:
        return parse_record(data)
    except RecordError:
        log.warning("skipping an unparseable record on the versions topic")
        return None
