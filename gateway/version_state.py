"""The state of the model versions in the pool and its reads: each `Version`, which one
serves, which one is canaried, the events that changed them, shares and live figures.

The state is a fold of the version events (docs/versions.md): `apply` is the one transition,
used alike by the controlling gateway after it wrote an event to the versions topic
(gateway/version_log.py), by a following gateway's feed, and by any gateway replaying the
topic at start (`restore`). Events carry ids, so one applied twice changes nothing.

`VersionBook` holds that state under one lock; `VersionRegistry` (gateway/versions.py) adds
routing and the controlling gateway's changes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from gateway.canary import Arm
from gateway.config import VersionsConfig
from gateway.drift import SideMetrics
from gateway.errors import NotFound
from gateway.judge_alarms import JudgeAlarms
from gateway.live_stats import LiveStats
from gateway.version_log import VersionLog
from ledger.published import BASE_VERSION
from ledger.recorder import Recorder
from ledger.records import ModelVersion

ADAPTER_PREFIX = "rlgw-"


@dataclass
class Version:
    id: str
    parent: str | None
    adapter_path: str | None
    status: str  # registered | loaded | evaluating | eval_failed | canary | serving | retired | ...
    created_at: float = field(default_factory=time.time)
    canary_since: float | None = None
    pinned: bool = False
    data_window: dict[str, Any] = field(default_factory=dict)
    replicas: dict[str, str] = field(default_factory=dict)  # replica url -> loaded | error: ...
    episodes_started: int = 0
    unloaded: bool = False  # retired and taken out of the replicas (reloaded if promoted again)
    traceparent: str | None = None  # the learner's span that made it: on every event of the version
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> figures (gateway/drift.py)
    promotion_blocked: bool = False  # an alarm held back its automatic promotion
    kind: str = "lora"  # or "full": adapter_path is a whole model folder (docs/full-weights.md)
    eval: dict[str, Any] | None = None  # the eval gate's verdict and reason (gateway/eval_versions.py)

    @property
    def adapter_name(self) -> str:
        return ADAPTER_PREFIX + self.id

    @property
    def weights(self) -> str:
        """The full weights a replica must hold to serve it: its own, or the base's (adapters)."""
        return self.id if self.kind == "full" else BASE_VERSION


class VersionBook:
    """The versions and the routing state, safe to read from any thread; changed only by
    the registry's methods (gateway/versions.py) or, on a follower, by `apply`: under `_lock`."""

    def __init__(
        self, cfg: VersionsConfig, recorder: Recorder, base_model: Any, log: VersionLog | None = None
    ) -> None:
        self.cfg = cfg
        self.recorder = recorder
        self.log = log or VersionLog(None, recorder)
        self._base_model = base_model  # callable -> upstream name of the base model
        self.base_adapter: str | None = None  # zero adapter serving the base, once registered
        self.versions: dict[str, Version] = {BASE_VERSION: Version(BASE_VERSION, None, None, "serving")}
        self.serving = BASE_VERSION
        self.canary: str | None = None
        self.events: list[ModelVersion] = []
        self.stats = LiveStats()
        self.side = SideMetrics()  # side metrics per version, for the drift alarms
        self.judges = JudgeAlarms()  # the judges' newest probe runs (gateway/judge_alarms.py)
        self._sticky: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.RLock()  # every change below; methods call one another
        self._changing = threading.RLock()  # one change at a time: plan, write, apply
        self._applied: set[str] = set()  # ids of the events applied

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

    def _new(
        self,
        v: Version,
        event: str,
        status: str,
        reason: str = "",
        figures: dict[str, Any] | None = None,
        pinned: bool | None = None,
    ) -> ModelVersion:
        """An event of `v`'s life, with the status it leaves `v` in (not applied yet)."""
        return ModelVersion(
            version=v.id,
            parent=v.parent,
            status=status,  # type: ignore[arg-type]
            event=event,
            reason=reason,
            figures=figures or {},
            adapter_path=v.adapter_path,
            weights_kind=v.kind,  # type: ignore[arg-type]
            data_window=v.data_window,
            pinned=v.pinned if pinned is None else pinned,
            traceparent=v.traceparent,
        )

    def _commit(self, *events: ModelVersion) -> None:
        """Write `events` to the versions topic, then apply them (raises VersionLogUnavailable,
        and changes nothing, while the topic cannot take them)."""
        self.log.append(events)
        with self._lock:
            for e in events:
                self._apply(e)

    def restore(self, events: Iterable[ModelVersion]) -> int:
        """Replay the versions topic (at start); returns how many events were new."""
        with self._lock:
            before = len(self._applied)
            for e in events:
                self._apply(e)
            return len(self._applied) - before

    def apply(self, e: ModelVersion) -> None:
        """Apply one event another gateway wrote (the feed's thread)."""
        with self._lock:
            self._apply(e)

    def _apply(self, e: ModelVersion) -> None:
        if e.id in self._applied:
            return
        self._applied.add(e.id)
        self.events.append(e)
        if e.event == "base_adapter":
            base = self.versions[BASE_VERSION]
            self.base_adapter = e.figures.get("adapter")
            base.adapter_path, base.replicas = e.adapter_path, dict(e.figures.get("replicas", {}))
            return
        v = self.versions.get(e.version)
        changed = v is None or v.status != e.status  # pins, alarms, reloads: no transition
        if v is None:
            v = Version(
                e.version,
                e.parent,
                e.adapter_path,
                e.status,
                created_at=e.created_at,
                data_window=dict(e.data_window),
                traceparent=e.traceparent,
                kind=e.weights_kind,
            )
            self.versions[e.version] = v
        v.status, v.pinned = e.status, e.pinned
        if e.event in ("loaded", "load_failed", "resident"):  # resident: replicas holding full weights
            v.replicas = dict(e.figures.get("replicas", {}))
        if e.event in ("unloaded", "reloaded"):
            v.unloaded = e.event == "unloaded"
        elif e.event in ("eval_passed", "eval_failed"):
            v.eval = {"verdict": e.figures.get("verdict", e.event), "reason": e.reason}
        elif e.event == "alarm_blocked_promotion":
            v.promotion_blocked = True
        elif e.event.startswith("alarm"):  # ours (gateway/drift.py) or another part's (alarm_kl)
            v.alarms[str(e.figures.get("metric") or e.event)] = dict(e.figures)
        if not changed:
            return
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
                target = self.versions.setdefault(self.serving, Version(self.serving, None, None, "serving"))
                target.status = "serving"
        elif e.status in ("retired", "failed") and self.canary == v.id:
            self.canary = None

    # ---- live figures ----------------------------------------------------------------------
    fleet_requests = False  # True while the turns feed brings every gateway's request outcomes

    def observe_request(self, version: str, ok: bool, latency_ms: float) -> None:
        """A call this gateway served; with the turns feed, none is counted here: every call
        leaves a turn or a failed call on the turns topic, which the feed counts."""
        if not self.fleet_requests:
            self.stats.add_request(version, ok, latency_ms, time.time())

    def observe_turn(self, version: str, turn_id: str, ok: bool, latency_ms: float, at: float) -> None:
        """A turn or failed call recorded by any gateway (the turns feed)."""
        if version in self.versions:
            self.stats.add_request(version, ok, latency_ms, at, turn_id)

    def observe_side(self, version: str | None, key: str, values: dict[str, float], at: float) -> None:
        if version is not None and values and version in self.versions:
            self.side.add(version, key, values, at)

    def observe_score(
        self, version: str | None, episode_id: str, total: float | None, at: float | None = None
    ) -> None:
        if version is None or total is None or version not in self.versions:
            return
        self.stats.add_reward(version, episode_id, total, time.time() if at is None else at)

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
        "alarms": sorted(v.alarms),
        "eval": v.eval,
    }
