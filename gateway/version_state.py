"""The state of the model versions in the pool and its reads: each `Version`, which one
serves, which one is canaried, the events that changed them, shares and live figures.

`VersionBook` holds that state under one lock; `VersionRegistry` (gateway/versions.py) adds
routing and the controlling gateway's changes, and `apply` mirrors another gateway's events
(on the feed's thread).
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from gateway.canary import Arm
from gateway.config import VersionsConfig
from gateway.errors import NotFound
from gateway.live_stats import LiveStats
from ledger.published import BASE_VERSION
from ledger.recorder import Recorder
from ledger.records import TOPIC_VERSIONS, ModelVersion

ADAPTER_PREFIX = "rlgw-"


@dataclass
class Version:
    id: str
    parent: str | None
    adapter_path: str | None
    status: str  # registered | loaded | canary | serving | retired | rolled_back | failed
    created_at: float = field(default_factory=time.time)
    canary_since: float | None = None
    pinned: bool = False
    data_window: dict[str, Any] = field(default_factory=dict)
    replicas: dict[str, str] = field(default_factory=dict)  # replica url -> loaded | error: ...
    episodes_started: int = 0
    unloaded: bool = False  # retired and taken out of the replicas (reloaded if promoted again)
    traceparent: str | None = None  # the learner's span that made it: on every event of the version

    @property
    def adapter_name(self) -> str:
        return ADAPTER_PREFIX + self.id


class VersionBook:
    """The versions and the routing state, safe to read from any thread; changed only by
    the registry's methods (gateway/versions.py) or, on a follower, by `apply`: under `_lock`."""

    def __init__(self, cfg: VersionsConfig, recorder: Recorder, base_model: Any) -> None:
        self.cfg = cfg
        self.recorder = recorder
        self._base_model = base_model  # callable -> upstream name of the base model
        self.base_adapter: str | None = None  # zero adapter serving the base, once registered
        self.versions: dict[str, Version] = {BASE_VERSION: Version(BASE_VERSION, None, None, "serving")}
        self.serving = BASE_VERSION
        self.canary: str | None = None
        self.events: list[ModelVersion] = []
        self.stats = LiveStats()
        self._sticky: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.RLock()  # every change below; methods call one another
        self._rng = random.Random()

    def share(self, vid: str) -> float:
        """The share of new episodes `vid` gets (0 unless it serves or is canaried)."""
        if vid == self.canary:
            return self.cfg.canary_share
        if vid == self.serving:
            return 1.0 - (self.cfg.canary_share if self.canary is not None else 0.0)
        return 0.0

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"id": v.id, "status": v.status, "share": self.share(v.id), "parent": v.parent}
                for v in self.versions.values()
                if v.status in ("serving", "canary")
            ]

    def recent_versions(self, episodes: int) -> set[str]:
        """The versions the newest `episodes` episodes stay on (they may still come back)."""
        with self._lock:
            return set(islice(reversed(self._sticky.values()), episodes))

    def get(self, vid: str) -> Version:
        v = self.versions.get(vid)
        if v is None:
            raise NotFound(f"version {vid} not found", param="version")
        return v

    def _event(
        self, version: Version, event: str, reason: str = "", figures: dict[str, Any] | None = None
    ) -> None:
        rec = ModelVersion(
            version=version.id,
            parent=version.parent,
            status=version.status,  # type: ignore[arg-type]
            event=event,
            reason=reason,
            figures=figures or {},
            adapter_path=version.adapter_path,
            data_window=version.data_window,
            pinned=version.pinned,
            traceparent=version.traceparent,
        )
        self.events.append(rec)
        self.recorder.record(TOPIC_VERSIONS, rec)

    # ---- following another gateway ------------------------------------------------------
    def apply(self, e: ModelVersion) -> None:
        """Mirror a version event made by the controlling gateway (routing state only); called
        on the feed's thread."""
        with self._lock:
            if e.event == "base_adapter":
                self.base_adapter = e.figures.get("adapter")
                return
            v = self.versions.get(e.version)
            if v is None:
                v = Version(e.version, e.parent, e.adapter_path, e.status, data_window=e.data_window)
                self.versions[e.version] = v
            v.status, v.pinned = e.status, e.pinned
            if e.status == "canary":
                self.canary, v.canary_since = v.id, e.created_at
            elif e.status == "serving":
                for other in self.versions.values():
                    if other.id != v.id and other.status == "serving":
                        other.status = "retired"
                self.serving = v.id
                if self.canary == v.id:
                    self.canary = None
            elif e.status == "rolled_back":
                if self.canary == v.id:
                    self.canary = None
                elif self.serving == v.id:
                    self.serving = v.parent or BASE_VERSION
                    self.versions.setdefault(
                        self.serving, Version(self.serving, None, None, "serving")
                    ).status = "serving"
            elif e.status == "retired" and self.canary == v.id:
                self.canary = None
            self.events.append(e)

    # ---- live figures ----------------------------------------------------------------------
    def observe_request(self, version: str, ok: bool, latency_ms: float) -> None:
        self.stats.add_request(version, ok, latency_ms)

    def observe_score(self, version: str | None, episode_id: str, total: float | None) -> None:
        if version is None or total is None or version not in self.versions:
            return
        self.stats.add_reward(version, episode_id, total)

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            versions = list(self.versions.values())
            shares = {v.id: self.share(v.id) for v in versions}
        return [
            version_row(v, self.stats.arm(v.id, 0.0), shares[v.id], self.cfg.confidence) for v in versions
        ]


def version_row(v: Version, arm: Arm, share: float, confidence: float) -> dict[str, Any]:
    """One version as the admin listing and the dashboard show it."""
    low, high = arm.interval(confidence)
    return {
        "id": v.id,
        "parent": v.parent,
        "status": v.status,
        "pinned": v.pinned,
        "share": share,
        "episodes": arm.n,
        "reward": None if arm.n == 0 else round(arm.mean, 4),
        "reward_interval": None if arm.n < 2 else [round(low, 4), round(high, 4)],
        "requests": arm.requests,
        "error_rate": round(arm.error_rate, 4),
        "latency_p50_ms": arm.latency_p50_ms,
        "created_at": v.created_at,
        "canary_since": v.canary_since,
        "data_window": v.data_window,
        "replicas": v.replicas,
        "adapter_path": v.adapter_path,
    }
