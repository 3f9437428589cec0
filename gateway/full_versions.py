"""Full-weight versions in the registry (docs/full-weights.md): where their weights are, and
the changes their placement makes.

A full-weight version (`kind="full"`) is a whole model folder, put on replicas of their own by
gateway/rollout.py. Routing asks `holders(weights)` which replicas hold a version's weights
(None: every replica, as for adapters on the base weights; an empty set: none yet, so a
canary there gets no episode). Like every registry change, `full_loaded`, `full_failed` and
`resident` write version events to the versions topic before applying them
(gateway/version_state.py), so a restarted or following gateway rebuilds them; they may raise
VersionLogUnavailable and must run off the event loop.

Which replica holds what is folded from the events too, for every gateway alike: `placement`
(replica URL -> the weights it holds, from `resident` events), `draining_replicas` (told by
`replica_draining` before a swap or a retirement drains one; a `resident` event returns it)
and `removed_replicas` (`replica_removed`: retired by a rolling swap). A following gateway
keeps its pool to these (`FullWeightRollout.follow`), so it routes a full-weight version to
the replicas the controlling gateway put it on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.version_state import Version, VersionBook
from ledger.records import ModelVersion


class FullWeightVersions(VersionBook):
    # weights -> URLs of the replicas holding them, taking requests (None: all); gateway/rollout.py
    holders: Callable[[str], frozenset[str] | None] = staticmethod(lambda weights: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.placement: dict[str, str] = {}  # replica URL -> the weights it holds (told so)
        self.draining_replicas: set[str] = set()
        self.removed_replicas: set[str] = set()

    def _apply(self, e: ModelVersion) -> None:
        fresh = e.id not in self._applied
        super()._apply(e)
        if not fresh:
            return
        url = str(e.figures.get("replica", ""))
        if e.event == "resident":
            for held in e.figures.get("replicas", {}):
                self.placement[held] = e.version
                self.draining_replicas.discard(held)
                self.removed_replicas.discard(held)
        elif e.event == "replica_draining":
            self.draining_replicas.add(url)
        elif e.event == "replica_removed":
            self.placement.pop(url, None)
            self.draining_replicas.discard(url)
            self.removed_replicas.add(url)

    def place_with(self, holders: Callable[[str], frozenset[str] | None]) -> None:
        self.holders = holders  # type: ignore[method-assign]

    def placed(self, v: Version) -> bool:
        """Whether some replica holds `v`'s weights (always, for an adapter)."""
        return self.holders(v.weights) != frozenset()

    def full_loaded(self, v: Version) -> bool:
        """A registered full-weight version waits for replicas of its own (gateway/rollout.py)
        as the canary, or queued behind the running one; True when it is the canary now."""
        with self._changing:
            events = [
                self._new(v, "loaded", "loaded", "full weights: put on replicas of their own as its canary")
            ]
            if self.canary is None:
                events.append(
                    self._new(v, "canary", "canary", f"{self.cfg.canary_share:.0%} of new episodes")
                )
            self._commit(*events)
            return self.canary == v.id

    def full_failed(self, v: Version, reason: str) -> None:
        with self._changing:
            self._commit(self._new(v, "load_failed", "failed", reason))

    def resident(self, vid: str, replicas: list[str], figures: dict[str, Any]) -> None:
        """A replica now holds `vid`'s full weights (`replicas`: every one that does)."""
        with self._changing:
            v = self.versions.get(vid)
            if v is not None:
                reason = f"{figures.get('mode')} on {figures.get('replica')}"
                held = {**figures, "replicas": dict.fromkeys(replicas, "loaded")}
                self._commit(self._new(v, "resident", v.status, reason, held))

    def replica_draining(self, weights: str, url: str) -> None:
        """Replica `url` (holding `weights`) leaves routing on every gateway: it is about to be
        swapped or retired."""
        self._replica_event(weights, url, "replica_draining")

    def replica_removed(self, weights: str, url: str) -> None:
        """Replica `url` left the pool (a rolling swap retired it)."""
        self._replica_event(weights, url, "replica_removed")

    def _replica_event(self, weights: str, url: str, event: str) -> None:
        with self._changing:
            v = self.versions.get(weights)
            if v is not None:
                self._commit(self._new(v, event, v.status, f"{event} {url}", {"replica": url}))
