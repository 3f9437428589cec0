"""Adapters in the replicas: which versions' adapters must be loaded, and the registry
changes their loading and unloading make (version events, as every registry change:
gateway/version_state.py). A full-weight version has no adapter (gateway/full_versions.py).
"""

from __future__ import annotations

from gateway.version_state import Version, VersionBook
from ledger.published import BASE_VERSION


class AdapterVersions(VersionBook):
    def active_adapters(self) -> list[tuple[str, str]]:
        """(adapter name, path) of every version that may serve, the base's zero adapter too;
        a version among them is no longer marked unloaded."""
        with self._lock:
            active = [
                v
                for v in self.versions.values()
                if v.adapter_path
                and v.id != BASE_VERSION
                and v.kind != "full"
                and v.status in ("serving", "canary", "loaded", "evaluating")
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
        with self._changing:
            if replicas:
                self._commit(
                    self._new(v, "reloaded", v.status, f"on {replicas} replicas, before routing to it")
                )
            with self._lock:
                v.unloaded = False

    def take_out_stale(self, keep: int, recent_episodes: int) -> list[Version]:
        """Retired versions past the newest `keep`, out of the recent episodes' history: routing
        leaves them now, before the replicas drop them (see `unloaded`)."""
        with self._lock:
            retired = [
                v
                for v in self.versions.values()
                if v.status in ("retired", "rolled_back", "eval_failed")
                and v.adapter_path
                and not v.unloaded
                and v.kind != "full"
            ]
            failed = [v for v in retired if v.status == "eval_failed"]  # never served: no rollback to it
            retired = [v for v in retired if v.status != "eval_failed"]
            recent = self.recent_versions(recent_episodes)
            stale = failed + [v for v in retired[: max(0, len(retired) - keep)] if v.id not in recent]
            for v in stale:
                v.unloaded = True
            return stale

    def unloaded(self, v: Version) -> None:
        """`v` left the replicas (one promoted again meanwhile is loaded back by the next reconcile)."""
        with self._changing:
            self._commit(self._new(v, "unloaded", v.status))
