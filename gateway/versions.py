"""Model versions in the pool: which one serves, which one is canaried, and live figures.

`VersionRegistry` is the router the chat service asks: a new episode goes to the canary with
probability `canary_share`, otherwise to the serving version; an episode stays on the version
that served its first turn (until that version is rolled back or unloaded: then it moves to
the serving one). Every state change is a ModelVersion event handed to the ledger.

Each version is an adapter loaded under its own name (`rlgw-<version>`) — never reloaded in
place. The base model itself is served through an all-zero adapter once the learner registers
one (`base_equivalent`), which avoids vLLM's mixed-batch base-model bug.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from gateway.canary import Arm
from gateway.config import VersionsConfig
from gateway.errors import InvalidRequest, NotFound
from gateway.routing import Route
from ledger.published import BASE_VERSION, PublishedVersion
from ledger.recorder import Recorder
from ledger.records import TOPIC_VERSIONS, ModelVersion

ADAPTER_PREFIX = "rlgw-"
EPISODE_MEMORY = 200_000


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


class VersionRegistry:
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
        self._episode_started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._rng = random.Random()

    # ---- routing -----------------------------------------------------------------------
    def route(self, episode_id: str, tenant: str) -> Route:
        version = self._sticky.get(episode_id)
        if version is None or version not in self.versions or self._gone(self.versions[version]):
            version = self.serving
            if self.canary is not None and self._rng.random() < self.cfg.canary_share:
                version = self.canary
            self._sticky[episode_id] = version
            self._sticky.move_to_end(episode_id)
            if len(self._sticky) > EPISODE_MEMORY:
                self._sticky.popitem(last=False)
            self.versions[version].episodes_started += 1
        return Route(version, self.upstream_name(version))

    @staticmethod
    def _gone(v: Version) -> bool:
        """An episode's version it can no longer stay on: rolled back, or taken out of the replicas."""
        return v.status == "rolled_back" or v.unloaded

    def upstream_name(self, version: str) -> str:
        if version == BASE_VERSION:
            if self.base_adapter is not None:
                return self.base_adapter
            name = self._base_model()
            if name is None:
                from gateway.errors import NoReplica

                raise NoReplica("no upstream replica has reported its model yet", code="no_healthy_replica")
            return str(name)
        return self.versions[version].adapter_name

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for v in self.versions.values():
            if v.status in ("serving", "canary"):
                share = self.cfg.canary_share if v.id == self.canary else 1.0
                if v.id == self.serving and self.canary is not None:
                    share = 1.0 - self.cfg.canary_share
                out.append({"id": v.id, "status": v.status, "share": share, "parent": v.parent})
        return out

    # ---- state changes -------------------------------------------------------------------
    def event(
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

    def register(self, published: PublishedVersion) -> Version:
        vid = published.version
        if not vid or vid == BASE_VERSION or "/" in vid:
            raise InvalidRequest(f"invalid version id {vid!r}", param="version")
        if vid in self.versions:
            raise InvalidRequest(
                f"version {vid} is already registered", param="version", code="version_exists"
            )
        parent = published.parent or self.serving
        if parent not in self.versions:
            raise InvalidRequest(f"unknown parent version {parent}", param="parent")
        v = Version(
            vid,
            parent,
            published.adapter_path,
            "registered",
            data_window=dict(published.data_window),
            traceparent=published.traceparent,
        )
        self.versions[vid] = v
        self.event(v, "registered")
        return v

    def start_canary(self, v: Version) -> None:
        if self.canary is not None and self.canary != v.id:
            old = self.versions[self.canary]
            old.status = "retired"
            self.event(old, "superseded", f"canary replaced by {v.id}")
        v.status, v.canary_since = "canary", time.time()
        self.canary = v.id
        self.event(v, "canary", f"{self.cfg.canary_share:.0%} of new episodes")

    def promotable(self, vid: str) -> Version:
        v = self.get(vid)
        if v.status not in ("canary", "retired", "rolled_back", "loaded"):
            raise InvalidRequest(f"version {vid} is {v.status}; it cannot be promoted", param="version")
        return v

    def promote(self, vid: str, reason: str, figures: dict[str, Any] | None = None) -> Version:
        v = self.promotable(vid)
        old = self.versions[self.serving]
        if old.id != vid:
            old.status = "retired"
        v.status = "serving"
        self.serving = vid
        if self.canary == vid:
            self.canary = None
        self.event(v, "promoted", reason, figures)
        return v

    def rollback_target(self, vid: str | None) -> Version:
        """The version that serves after `rollback(vid)` (the serving one when a canary goes)."""
        vid = vid or self.canary or self.serving
        v = self.get(vid)
        if vid == BASE_VERSION:
            raise InvalidRequest("the base model cannot be rolled back", param="version")
        if vid == self.canary:
            return self.versions[self.serving]
        if vid == self.serving:
            return self.get(v.parent or BASE_VERSION)
        raise InvalidRequest(f"version {vid} is {v.status}: neither serving nor canary", param="version")

    def rollback(self, vid: str | None, reason: str, figures: dict[str, Any] | None = None) -> Version:
        """Take a canary out of traffic, or move serving back to its parent: a routing change
        (the admin routes load the target first if it was unloaded, see VersionController)."""
        vid = vid or self.canary or self.serving
        v = self.get(vid)
        target = self.rollback_target(vid)
        if vid == self.canary:
            self.canary = None
        else:
            target.status = "serving"
            self.serving = target.id
        v.status = "rolled_back"
        self.event(v, "rolled_back", reason, figures)
        return v

    def pin(self, vid: str, pinned: bool) -> Version:
        v = self.get(vid)
        v.pinned = pinned
        self.event(v, "pinned" if pinned else "unpinned")
        return v

    def get(self, vid: str) -> Version:
        v = self.versions.get(vid)
        if v is None:
            raise NotFound(f"version {vid} not found", param="version")
        return v

    # ---- following another gateway ------------------------------------------------------
    def apply(self, e: ModelVersion) -> None:
        """Mirror a version event made by the controlling gateway (routing state only)."""
        if e.event == "base_adapter":
            self.base_adapter = e.figures.get("adapter")
            return
        v = self.versions.get(e.version)
        if v is None:
            v = self.versions[e.version] = Version(e.version, e.parent, e.adapter_path, e.status)
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
        out = []
        for v in self.versions.values():
            arm = self.stats.arm(v.id, 0.0)
            low, high = arm.interval(self.cfg.confidence)
            share = 0.0
            if v.id == self.canary:
                share = self.cfg.canary_share
            elif v.id == self.serving:
                share = 1.0 - (self.cfg.canary_share if self.canary else 0.0)
            out.append(
                {
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
            )
        return out
