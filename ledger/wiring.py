"""Open the ledger a process needs from settings: bus, recorder, and store reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.bus import Bus, MemoryBus
from ledger.config import Settings
from ledger.recorder import Recorder


@dataclass
class Ledger:
    bus: Bus
    recorder: Recorder
    reader: Any = None  # the store's episode reads, where this process has a store

    def close(self) -> None:
        self.recorder.close()
        self.bus.close()


def open_bus(settings: Settings) -> Bus:
    kind = settings.ledger.bus
    if kind == "memory":
        return MemoryBus()
    raise NotImplementedError(f"ledger.bus = {kind!r} is not available yet")


def open_ledger(settings: Settings) -> Ledger:
    bus = open_bus(settings)
    recorder = Recorder(
        bus, capacity=settings.gateway.record_queue, topic_prefix=settings.ledger.topic_prefix
    )
    return Ledger(bus=bus, recorder=recorder.start())
