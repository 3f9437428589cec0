"""Model versions in the pool: which one serves, which one is canaried, and live figures.

`VersionRegistry` is the router the chat service asks: a new episode goes to the canary with
probability `canary_share`, otherwise to the serving version; an episode stays on the version
that served its first turn (until that version is rolled back or unloaded: then it moves to
the serving one). Every state change is a ModelVersion event handed to the ledger.

The state (gateway/version_state.py) changes only through the registry's methods, each under
one lock: the server's loop routes and the version controller decides, while a follower's
feed thread applies the controlling gateway's events.

Each version is an adapter loaded under its own name (`rlgw-<version>`) — never reloaded in
place. The base model itself is served through an all-zero adapter once the learner registers
one (`base_equivalent`), which avoids vLLM's mixed-batch base-model bug.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.errors import InvalidRequest, NoReplica
from gateway.routing import Route
from gateway.version_state import Version, VersionBook
from ledger.published import BASE_VERSION, PublishedVersion

EPISODE_MEMORY = 200_000
MAX_ID_CHARS = 200


class VersionRegistry(VersionBook):
    """The router the chat service asks, and the changes the controlling gateway makes."""

    # ---- routing -----------------------------------------------------------------------
    def route(self, episode_id: str, tenant: str) -> Route:
        with self._lock:
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
                raise NoReplica("no upstream replica has reported its model yet", code="no_healthy_replica")
            return str(name)
        return self.versions[version].adapter_name

    # ---- state changes -------------------------------------------------------------------
    def register(self, published: PublishedVersion) -> Version:
        vid = published.version
        if not _valid_id(vid):
            raise InvalidRequest(
                f"invalid version id {vid!r}: up to {MAX_ID_CHARS} printable ASCII characters, no '/'",
                param="version",
            )
        with self._lock:
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
            self._event(v, "registered")
            return v

    def record_load(self, v: Version, replicas: dict[str, str], figures: dict[str, Any]) -> Version:
        """The outcome of loading a registered version into every replica: failed, or loaded
        (and canaried at once when no canary runs)."""
        with self._lock:
            v.replicas = replicas
            if not replicas or any(s != "loaded" for s in replicas.values()):
                v.status = "failed"
                self._event(v, "load_failed", str(replicas), figures)
                return v
            v.status = "loaded"
            self._event(v, "loaded", f"on {len(replicas)} replicas", figures)
            if self.canary is None:
                self.start_canary(v)
            return v

    def serve_base_through(self, adapter: str, adapter_path: str, replicas: dict[str, str]) -> Version:
        """Serve the base model through a zero adapter loaded into every replica."""
        with self._lock:
            self.base_adapter = adapter
            base = self.versions[BASE_VERSION]
            base.adapter_path, base.replicas = adapter_path, replicas
            self._event(
                base, "base_adapter", f"base served through zero adapter {adapter}", {"adapter": adapter}
            )
            return base

    def start_canary(self, v: Version) -> None:
        with self._lock:
            if self.canary is not None and self.canary != v.id:
                old = self.versions[self.canary]
                old.status = "retired"
                self._event(old, "superseded", f"canary replaced by {v.id}")
            v.status, v.canary_since = "canary", time.time()
            self.canary = v.id
            self._event(v, "canary", f"{self.cfg.canary_share:.0%} of new episodes")

    def next_canary(self) -> None:
        """A version that arrived while another was canaried waits; the newest one goes next."""
        with self._lock:
            queued = [v for v in self.versions.values() if v.status == "loaded"]
            if self.canary is not None or not queued:
                return
            for older in queued[:-1]:
                older.status = "retired"
                self._event(older, "skipped", f"superseded by {queued[-1].id} before its canary")
            self.start_canary(queued[-1])

    def end_canary(self, reason: str, figures: dict[str, Any]) -> None:
        """Retire the canary that reached its episode limit undecided (it makes way)."""
        with self._lock:
            if self.canary is None:
                return
            canary = self.versions[self.canary]
            canary.status = "retired"
            self.canary = None
            self._event(canary, "inconclusive", reason, figures)

    def promotable(self, vid: str) -> Version:
        v = self.get(vid)
        if v.status not in ("canary", "retired", "rolled_back", "loaded"):
            raise InvalidRequest(f"version {vid} is {v.status}; it cannot be promoted", param="version")
        return v

    def promote(self, vid: str, reason: str, figures: dict[str, Any] | None = None) -> Version:
        with self._lock:
            v = self.promotable(vid)
            old = self.versions[self.serving]
            if old.id != vid:
                old.status = "retired"
            v.status = "serving"
            self.serving = vid
            if self.canary == vid:
                self.canary = None
            self._event(v, "promoted", reason, figures)
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
        with self._lock:
            vid = vid or self.canary or self.serving
            v = self.get(vid)
            target = self.rollback_target(vid)
            if vid == self.canary:
                self.canary = None
            else:
                target.status = "serving"
                self.serving = target.id
            v.status = "rolled_back"
            self._event(v, "rolled_back", reason, figures)
            return v

    def pin(self, vid: str, pinned: bool) -> Version:
        with self._lock:
            v = self.get(vid)
            v.pinned = pinned
            self._event(v, "pinned" if pinned else "unpinned")
            return v

    # ---- adapters in the replicas ------------------------------------------------------------
    def active_adapters(self) -> list[tuple[str, str]]:
        """(adapter name, path) of every version that may serve, the base's zero adapter too;
        a version among them is no longer marked unloaded."""
        with self._lock:
            active = [
                v
                for v in self.versions.values()
                if v.adapter_path and v.id != BASE_VERSION and v.status in ("serving", "canary", "loaded")
            ]
            out = [(v.adapter_name, str(v.adapter_path)) for v in active]
            for v in active:
                v.unloaded = False
            base = self.versions[BASE_VERSION]
            if self.base_adapter and base.adapter_path:
                out.append((self.base_adapter, base.adapter_path))
            return out

    def reloaded(self, v: Version, replicas: int) -> None:
        """`v` is in every healthy replica again (`replicas` of them lacked it)."""
        with self._lock:
            v.unloaded = False
            if replicas:
                self._event(v, "reloaded", f"on {replicas} replicas, before routing to it")

    def take_out_stale(self, keep: int, recent_episodes: int) -> list[Version]:
        """Retired versions past the newest `keep`, out of the recent episodes' history: routing
        leaves them now, before the replicas drop them (see `unloaded`)."""
        with self._lock:
            retired = [
                v
                for v in self.versions.values()
                if v.status in ("retired", "rolled_back") and v.adapter_path and not v.unloaded
            ]
            if len(retired) <= keep:
                return []
            recent = self.recent_versions(recent_episodes)
            stale = [v for v in retired[:-keep] if v.id not in recent]
            for v in stale:
                v.unloaded = True
            return stale

    def unloaded(self, v: Version) -> None:
        """`v` left the replicas (one promoted again meanwhile is loaded back by the next reconcile)."""
        with self._lock:
            self._event(v, "unloaded")


def _valid_id(vid: str) -> bool:
    """A version id goes into the X-Model-Version header and the adapter's name: printable ASCII."""
    return (
        0 < len(vid) <= MAX_ID_CHARS
        and vid != BASE_VERSION
        and "/" not in vid
        and all(33 <= ord(c) < 127 for c in vid)
    )
