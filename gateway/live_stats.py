"""Live figures per model version, as this gateway sees them: rewards by episode, request outcomes."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from gateway.canary import Arm


@dataclass
class LiveStats:
    """Per-version rewards (by episode) and request outcomes seen by this gateway."""

    rewards: dict[str, dict[str, tuple[float, float]]] = field(default_factory=lambda: defaultdict(dict))
    # version -> episode -> (scored_at, reward)
    requests: dict[str, deque[tuple[float, bool, float]]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=5000))
    )  # version -> (at, ok, latency_ms)
    lock: threading.Lock = field(default_factory=threading.Lock)  # feeds, server and readers race

    def add_request(self, version: str, ok: bool, latency_ms: float) -> None:
        with self.lock:
            self.requests[version].append((time.time(), ok, latency_ms))

    def add_reward(self, version: str, key: str, total: float) -> None:
        with self.lock:
            self.rewards[version][key] = (time.time(), total)

    def rewards_of(self, version: str) -> list[tuple[float, float]]:
        """(scored_at, reward) of a version's episodes, a copy safe to read from any thread."""
        with self.lock:
            return list(self.rewards.get(version, {}).values())

    def requests_of(self, version: str) -> list[tuple[float, bool, float]]:
        with self.lock:
            return list(self.requests.get(version, ()))

    def arm(self, version: str, since: float) -> Arm:
        rewards = tuple(r for at, r in self.rewards_of(version) if at >= since)
        reqs = [x for x in self.requests_of(version) if x[0] >= since]
        lat = sorted(x[2] for x in reqs if x[1])
        return Arm(
            rewards=rewards,
            requests=len(reqs),
            errors=sum(1 for x in reqs if not x[1]),
            latency_p50_ms=lat[len(lat) // 2] if lat else None,
        )
