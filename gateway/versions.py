"""Model versions in the pool: which one serves, which one is canaried, and live figures.

`VersionRegistry` is the router the chat service asks: a new episode goes to the canary when
its hash bucket (episode id, canary id) falls under `canary_share`, otherwise to the serving
version, so every gateway with the same registry sends it to the same version; an episode
stays on the version that served its first turn, here or on another gateway (the turns feed
tells), until that version is rolled back or unloaded: then it is assigned again.

Every state change is a ModelVersion event written to the versions topic before it is
applied (gateway/version_log.py), one change at a time; the state (gateway/version_state.py)
is the fold of those events, so any gateway rebuilds it from the ledger (docs/versions.md).

Each version is an adapter loaded under its own name (`rlgw-<version>`) — never reloaded in
place — or full weights on replicas of their own (gateway/full_versions.py). The base model
itself is served through an all-zero adapter once the learner registers one
(`base_equivalent`), which avoids vLLM's mixed-batch base-model bug.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gateway.adapter_versions import AdapterVersions
from gateway.errors import InvalidRequest, NoReplica
from gateway.eval_versions import EVALUABLE, EvalVersions
from gateway.lineage import descends, rolled_back_between
from gateway.routing import Route
from gateway.version_state import Version
from ledger.published import BASE_VERSION, PublishedVersion

EPISODE_MEMORY = 200_000
MAX_ID_CHARS = 200


def canary_bucket(episode_id: str, canary: str) -> float:
    """A uniform number in [0, 1) for an episode and a canary: below the canary share, the
    episode goes to the canary. Salted with the canary, so each canary gets other episodes."""
    digest = hashlib.blake2b(f"{canary}\0{episode_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class VersionRegistry(AdapterVersions, EvalVersions):
    """The router the chat service asks, and the changes the controlling gateway makes."""

    # ---- routing -----------------------------------------------------------------------
    def route(self, episode_id: str, tenant: str) -> Route:
        with self._lock:
            version = self._sticky.get(episode_id)
            if version is None or version not in self.versions or self._gone(self.versions[version]):
                version = None
            elif not self.placed(self.versions[version]):
                version = None  # no replica holds its weights any more: on to the serving version
            if version is None:
                version = self.assign(episode_id)
                self._sticky[episode_id] = version
                self._sticky.move_to_end(episode_id)
                if len(self._sticky) > EPISODE_MEMORY:
                    self._sticky.popitem(last=False)
                self.versions[version].episodes_started += 1
            return Route(version, self.upstream_name(version), self.holders(self.versions[version].weights))

    def assign(self, episode_id: str) -> str:
        """The version a new episode goes to: a function of the episode id and the registry
        alone, so every gateway sends an episode to the same one (docs/versions.md)."""
        with self._lock:
            canary = self.versions.get(self.canary) if self.canary is not None else None
            if (
                canary is not None
                and self.placed(canary)  # a full-weight canary no replica holds yet gets nothing
                and canary_bucket(episode_id, canary.id) < self.cfg.canary_share
            ):
                return canary.id
            return self.serving

    def eval_route(self, vid: str) -> Route:
        """Where an evaluation request for `vid` goes, whatever its share of live traffic
        (gateway/eval_versions.py); a version whose weights left the replicas cannot be asked."""
        with self._lock:
            v = self.get(vid)
            if v.status not in EVALUABLE or v.unloaded or not self.placed(v):
                gone = " and unloaded" if v.unloaded else ""
                raise InvalidRequest(
                    f"version {vid} is {v.status}{gone}: not in the replicas",
                    param="version",
                    code="not_loaded",
                )
            return Route(v.id, self.upstream_name(v.id), self.holders(v.weights))

    def seen(self, episode_id: str, version: str) -> None:
        """A turn of `episode_id` served by `version` on some gateway (the turns feed): an
        episode this gateway has not routed yet stays there too."""
        with self._lock:
            if episode_id not in self._sticky and version in self.versions:
                self._sticky[episode_id] = version
                if len(self._sticky) > EPISODE_MEMORY:
                    self._sticky.popitem(last=False)

    @staticmethod
    def _gone(v: Version) -> bool:
        """An episode's version it can no longer stay on: rolled back, or taken out of the replicas."""
        return v.status == "rolled_back" or v.unloaded

    def upstream_name(self, version: str) -> str:
        if version == BASE_VERSION:
            if self.base_adapter is not None:
                return self.base_adapter
            return self._base_name()
        if self.versions[version].kind == "full":  # replicas keep their start name across swaps
            return self._base_name()
        return self.versions[version].adapter_name

    def _base_name(self) -> str:
        name = self._base_model()
        if name is None:
            raise NoReplica("no upstream replica has reported its model yet", code="no_healthy_replica")
        return str(name)

    # ---- state changes: each writes its events to the versions topic, then applies them ---------
    def register(self, published: PublishedVersion) -> Version:
        vid = published.version
        if not _valid_id(vid):
            raise InvalidRequest(
                f"invalid version id {vid!r}: up to {MAX_ID_CHARS} printable ASCII characters, no '/'",
                param="version",
            )
        with self._changing:
            if vid in self.versions:
                raise InvalidRequest(
                    f"version {vid} is already registered", param="version", code="version_exists"
                )
            parent = published.parent or self.serving
            if parent not in self.versions:
                raise InvalidRequest(f"unknown parent version {parent}", param="parent")
            tainted = rolled_back_between(self.versions, parent, self.serving)
            if tainted is not None:
                raise InvalidRequest(
                    f"version {vid} descends from {tainted}, which was rolled back",
                    param="parent",
                    code="parent_rolled_back",
                )
            v = Version(
                vid,
                parent,
                published.adapter_path,
                "registered",
                data_window=dict(published.data_window),
                traceparent=published.traceparent,
                kind=published.kind,
            )
            self._commit(self._new(v, "registered", "registered"))
            return self.versions[vid]

    def record_load(self, v: Version, replicas: dict[str, str], figures: dict[str, Any]) -> Version:
        """The outcome of loading a registered version into every replica: failed, or loaded
        (then evaluated with the eval gate on, else canaried at once when no canary runs)."""
        figures = {**figures, "replicas": replicas}
        with self._changing:
            if not replicas or any(s != "loaded" for s in replicas.values()):
                self._commit(self._new(v, "load_failed", "failed", str(replicas), figures))
                return v
            self._commit(self._new(v, "loaded", "loaded", f"on {len(replicas)} replicas", figures))
            if self.gated:  # evaluated before any live traffic (gateway/eval_versions.py)
                self.start_eval(v)
            elif self.canary is None:
                self.start_canary(v)
            return v

    def serve_base_through(self, adapter: str, adapter_path: str, replicas: dict[str, str]) -> Version:
        """Serve the base model through a zero adapter loaded into every replica."""
        with self._changing:
            base = self.versions[BASE_VERSION]
            e = self._new(
                base,
                "base_adapter",
                base.status,
                f"base served through zero adapter {adapter}",
                {"adapter": adapter, "replicas": replicas},
            )
            e.adapter_path = adapter_path
            self._commit(e)
            return base

    def start_canary(self, v: Version) -> None:
        with self._changing:
            events = []
            if self.canary is not None and self.canary != v.id:
                old = self.versions[self.canary]
                events.append(self._new(old, "superseded", "retired", f"canary replaced by {v.id}"))
            events.append(self._new(v, "canary", "canary", f"{self.cfg.canary_share:.0%} of new episodes"))
            self._commit(*events)

    def next_canary(self) -> None:
        """A version that arrived while another was canaried waits; the newest one goes next."""
        with self._changing:
            queued = [v for v in self.versions.values() if v.status == "loaded"]
            if self.canary is not None or not queued:
                return
            skipped = [
                self._new(older, "skipped", "retired", f"superseded by {queued[-1].id} before its canary")
                for older in queued[:-1]
            ]
            if skipped:
                self._commit(*skipped)
            self.start_canary(queued[-1])

    def end_canary(self, reason: str, figures: dict[str, Any]) -> None:
        """Retire the canary that reached its episode limit undecided (it makes way)."""
        with self._changing:
            if self.canary is not None:
                self._commit(
                    self._new(self.versions[self.canary], "inconclusive", "retired", reason, figures)
                )

    def promotable(self, vid: str) -> Version:
        v = self.get(vid)
        if v.status not in ("canary", "retired", "rolled_back", "loaded"):
            raise InvalidRequest(f"version {vid} is {v.status}; it cannot be promoted", param="version")
        return v

    def promote(self, vid: str, reason: str, figures: dict[str, Any] | None = None) -> Version:
        with self._changing:
            v = self.promotable(vid)
            self._commit(self._new(v, "promoted", "serving", reason, figures))
            return v

    def rollback_target(self, vid: str | None) -> Version:
        """The version that serves after `rollback(vid)` (the serving one when a canary goes)."""
        with self._lock:
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
        with self._changing:
            vid = vid or self.canary or self.serving
            v = self.get(vid)
            self.rollback_target(vid)  # refuses what cannot be rolled back
            heirs = [
                self._new(d, "retired_with_ancestor", "retired", f"descends from {vid}, rolled back")
                for d in self.versions.values()
                if d.status in ("registered", "loaded", "canary") and descends(self.versions, d.id, vid)
            ]
            self._commit(self._new(v, "rolled_back", "rolled_back", reason, figures), *heirs)
            return v

    def alarm(self, v: Version, reason: str, figures: dict[str, Any]) -> None:
        """A side metric of `v` moved away from its parent's (gateway/drift.py)."""
        with self._changing:
            self._commit(self._new(v, "alarm", v.status, reason, figures))

    def block_promotion(self, v: Version, reason: str, figures: dict[str, Any]) -> None:
        with self._changing:
            self._commit(self._new(v, "alarm_blocked_promotion", v.status, reason, figures))

    def pin(self, vid: str, pinned: bool) -> Version:
        with self._changing:
            v = self.get(vid)
            self._commit(self._new(v, "pinned" if pinned else "unpinned", v.status, pinned=pinned))
            return v


def _valid_id(vid: str) -> bool:
    """A version id goes into the X-Model-Version header and the adapter's name: printable ASCII."""
    return (
        0 < len(vid) <= MAX_ID_CHARS
        and vid != BASE_VERSION
        and "/" not in vid
        and all(33 <= ord(c) < 127 for c in vid)
    )
