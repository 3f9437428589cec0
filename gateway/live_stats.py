"""Live figures per model version, from the ledger: rewards by episode (the scores topic) and
request outcomes (the turns topic), each at the time it was recorded, so every gateway, and
a gateway that restarted and read the topics again, holds the same figures (docs/versions.md).
A failed call that left no turn is counted by the gateway that saw it (`key` None)."""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field

from gateway.canary import Arm
from ledger.ids import new_id

REQUESTS_KEPT = 20_000  # per version: the newest request outcomes


@dataclass
class LiveStats:
    """Per-version rewards (by episode) and request outcomes (by turn id)."""

    rewards: dict[str, dict[str, tuple[float, float]]] = field(default_factory=lambda: defaultdict(dict))
    # version -> episode key -> (scored_at, reward)
    requests: dict[str, OrderedDict[str, tuple[float, bool, float]]] = field(
        default_factory=lambda: defaultdict(OrderedDict)
    )  # version -> turn id -> (at, ok, latency_ms)
    lock: threading.Lock = field(default_factory=threading.Lock)  # feeds, server and readers race

    def add_request(
        self, version: str, ok: bool, latency_ms: float, at: float, key: str | None = None
    ) -> None:
        with self.lock:
            kept = self.requests[version]
            kept[key or new_id()] = (at, ok, latency_ms)
            if len(kept) > REQUESTS_KEPT:
                kept.popitem(last=False)

    def add_reward(self, version: str, key: str, total: float, at: float) -> None:
        with self.lock:
            self.rewards[version][key] = (at, total)

    def rewards_of(self, version: str) -> list[tuple[float, float]]:
        """(scored_at, reward) of a version's episodes, oldest first, safe to read from any thread."""
        with self.lock:
            return sorted(self.rewards.get(version, {}).values())

    def requests_of(self, version: str) -> list[tuple[float, bool, float]]:
        with self.lock:
            return sorted(self.requests.get(version, {}).values())

    def arm(self, version: str, since: float) -> Arm:
        rewards = [(at, r) for at, r in self.rewards_of(version) if at >= since]
        reqs = [x for x in self.requests_of(version) if x[0] >= since]
        lat = sorted(x[2] for x in reqs if x[1])
        return Arm(
            rewards=tuple(r for _, r in rewards),
            requests=len(reqs),
            errors=sum(1 for x in reqs if not x[1]),
            latency_p50_ms=lat[len(lat) // 2] if lat else None,
            reward_at=tuple(at for at, _ in rewards),
            outcomes=tuple(reqs),
        )
