"""Full-weight versions in the pool: which replica holds which weights, and how they change.

Each replica holds one set of full weights (`Replica.weights`: a version id, "base" at start).
A full-weight version is served only by the replicas that hold it (`holders`, the registry's
routing hook); an adapter version needs the base weights. `converge()` moves the pool toward
its target, one replica at a time:

    serving version's weights    on every replica but the canary's
    canary's weights (if full)   on max(1, round(N * canary_share)) replicas of its own

A swap never takes a request with it: the replica is first drained (routing leaves it, then
its requests in flight finish), then changed, then probed, then routed to again.

- `in_place` (vLLM's reload_weights, gateway/weights.py): the pool keeps its N replicas; a
  replica's weights are replaced where it runs. Needs N >= 2 (one replica drained at a time
  while the others serve).
- `rolling`: a replica is started on the wanted weights, probed (warm), added; then a replica
  no longer wanted is drained, removed and stopped. N replicas serve the serving version and
  a full canary gets replicas of its own on top. Works with any engine.

Rollback to a version no replica holds any more: `ensure_resident` brings one replica onto it
before routing moves; `converge()` does the rest. Figures of each swap (ms): `route` (draining
the replica), `load` (reload, or start until ready), `warm` (the probe).

Several gateways: each change of placement is a version event (gateway/full_versions.py). The
controlling gateway tells every gateway a replica is draining before it drains it; after its
own requests on it are done it waits for the fleet's: until the replica itself reports no
request running or waiting for a second (`weights.quiet`: every gateway's requests meet
there), at most `versions.follower_drain_s` after telling (an engine that does not report
them gets all of it). A following gateway runs `follow()`, which keeps its pool to the events:
the weights each replica holds, the replicas draining, the replicas a rolling swap added, and
those it removed, which leave the follower's pool once its own requests on them are done (or
after `drain_timeout_s`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.pool import Pool, Replica
from gateway.version_log import VersionLogUnavailable
from gateway.versions import VersionRegistry
from gateway.weights import (
    InPlaceReloader,
    ReplicaLauncher,
    SwapError,
    probe,
    quiet,
    requests_on,
    ties_embeddings,
)
from ledger.published import BASE_VERSION

log = logging.getLogger(__name__)


class FullWeightRollout:
    def __init__(
        self,
        registry: VersionRegistry,
        pool: Pool,
        *,
        mode: str = "in_place",
        launcher: ReplicaLauncher | None = None,
        base_weights: str | None = None,
        drain_timeout_s: float = 300.0,
    ) -> None:
        self.registry, self.pool, self.mode = registry, pool, mode
        self.reloader = InPlaceReloader()
        self.launcher = launcher
        self.base_weights = base_weights
        self.drain_timeout_s = drain_timeout_s
        self.slots = len(pool.replicas)  # replicas serving the serving version (rolling)
        self.swaps: list[dict[str, Any]] = []  # figures of every swap, newest last
        self.follower_drain_s = registry.cfg.follower_drain_s
        self.requests_on = requests_on  # a replica's requests, all gateways' (None: not told)
        self._removed_at: dict[str, float] = {}  # follower: when it saw a replica retired
        registry.place_with(self.holders)

    # ---- routing hook --------------------------------------------------------------------
    def holders(self, weights: str) -> frozenset[str] | None:
        """URLs of the replicas that hold `weights` and take requests; None when all do."""
        reps = self.pool.replicas
        if all(r.weights == weights and not r.draining for r in reps):
            return None
        return frozenset(r.url for r in reps if r.weights == weights and not r.draining)

    def resident(self, weights: str) -> bool:
        return any(r.weights == weights for r in self.pool.replicas)

    def adopt(self) -> None:
        """At start: each replica's weights as the version events last placed them (a restarted
        gateway rebuilds from the "resident" events what its replicas hold)."""
        for r in self.pool.replicas:
            r.weights = self.registry.placement.get(r.url, r.weights)

    async def follow(self) -> None:
        """A following gateway: its pool as the controlling gateway's events place it."""
        reg = self.registry
        with reg._lock:
            placement, draining = dict(reg.placement), set(reg.draining_replicas)
            removed = set(reg.removed_replicas)
        known = {r.url for r in self.pool.replicas}
        for url, weights in placement.items():
            if url not in known:  # a rolling swap started it
                await self.pool.check(self.pool.add(url, weights=weights, launched=False))
        now = time.monotonic()
        for r in self.pool.replicas:
            since = self._removed_at.setdefault(r.url, now) if r.url in removed else None
            if since is not None and (r.outstanding == 0 or now - since >= self.drain_timeout_s):
                await self.pool.remove(r)  # its requests done: the follower's drain
                del self._removed_at[r.url]
            r.weights = placement.get(r.url, r.weights)
            r.draining = r.url in draining or r.url in removed

    # ---- targets ---------------------------------------------------------------------------
    def targets(self) -> dict[str, int]:
        reg = self.registry
        serving = reg.versions[reg.serving].weights
        n = len(self.pool.replicas) if self.mode == "in_place" else self.slots
        want = {serving: n}
        canary = reg.versions[reg.canary].weights if reg.canary else serving
        if canary != serving:
            k = max(1, round(n * reg.cfg.canary_share))
            if self.mode == "in_place":
                k = min(k, n - 1)
                want[serving] = n - k
            if k > 0:
                want[canary] = k
        return want

    def weights_path(self, weights: str) -> str:
        if weights == BASE_VERSION:
            path = self.base_weights or self.registry.upstream_name(BASE_VERSION)
            if not Path(path).is_dir():
                raise SwapError("the base weights' folder is not known: set versions.base_weights")
            return path
        v = self.registry.get(weights)
        if not v.adapter_path:
            raise SwapError(f"version {weights} has no weights folder")
        return v.adapter_path

    # ---- moving toward the targets ---------------------------------------------------------
    async def converge(self) -> None:
        """Swap replicas, one at a time, until the pool matches `targets()`."""
        for _ in range(4 * len(self.pool.replicas) + 4):  # bounded: a failing swap cannot spin
            want = self.targets()
            have = Counter(r.weights for r in self.pool.replicas)
            short = [w for w, k in want.items() if have[w] < k]
            spare = [r for r in self.pool.replicas if have[r.weights] > want.get(r.weights, 0)]
            spare.sort(key=lambda r: (r.weights in want, r.outstanding))  # unwanted weights first
            if self.mode == "in_place":
                if not short or not spare:
                    return
                await self.swap_in_place(spare[0], short[0])
            elif short:
                await self.launch(short[0])
            elif spare:
                await self.retire(spare[0])
            else:
                return

    async def ensure_resident(self, weights: str) -> None:
        """Bring one replica onto `weights` before routing moves to them (a rollback to a
        version no replica holds); raises SwapError when the pool cannot spare one."""
        if self.resident(weights):
            return
        if self.mode == "rolling":
            await self.launch(weights)
            return
        have = Counter(r.weights for r in self.pool.replicas)
        spare = sorted((r for r in self.pool.replicas if have[r.weights] > 1), key=lambda r: r.outstanding)
        if not spare:
            raise SwapError(f"no replica can be spared to load {weights}: in place needs two replicas")
        await self.swap_in_place(spare[0], weights)

    async def swap_in_place(self, replica: Replica, weights: str) -> None:
        path, old = self.weights_path(weights), replica.weights
        if ties_embeddings(path):  # vLLM 0.32 reloads tied embeddings wrong (docs/full-weights.md)
            raise SwapError(f"{path} ties its embeddings: in place cannot serve it exactly; use rolling")
        figures = {"replica": replica.url, "weights": weights, "mode": "in_place"}
        t0 = time.perf_counter()
        await self._tell_draining(replica)
        replica.draining = True
        try:
            await self._drained(replica, t0)
            t1 = time.perf_counter()
            try:
                await self.reloader.reload(replica.url, path)
                replica.weights = weights
                t2 = time.perf_counter()
                await probe(replica.url, self.registry.upstream_name(weights))
            except SwapError:
                await self._restore(replica, old)
                await self._announce(replica.weights, {"replica": replica.url, "mode": "restored"})
                raise
            t3 = time.perf_counter()
        finally:
            replica.draining = False
        await self._done(figures, weights, route=t1 - t0, load=t2 - t1, warm=t3 - t2)

    async def launch(self, weights: str) -> Replica:
        if self.launcher is None:
            raise SwapError("rolling swaps need a replica launcher")
        path = self.weights_path(weights)
        name = self.registry.upstream_name(weights)
        t0 = time.perf_counter()
        url = await self.launcher.start(path, name)
        t1 = time.perf_counter()
        try:
            await probe(url, name)
        except SwapError:
            await self.launcher.stop(url)
            raise
        t2 = time.perf_counter()
        replica = self.pool.add(url, weights=weights)
        await self.pool.check(replica)
        await self._done(
            {"replica": replica.url, "weights": weights, "mode": "rolling"}, weights, 0.0, t1 - t0, t2 - t1
        )
        return replica

    async def retire(self, replica: Replica) -> None:
        """Drain a replica out of routing, take it out of the pool, stop it if we started it."""
        t0 = time.perf_counter()
        await self._tell_draining(replica)
        replica.draining = True
        await self._drained(replica, t0)
        await self.pool.remove(replica)
        if replica.launched and self.launcher is not None:
            await self.launcher.stop(replica.url)
        try:
            await asyncio.to_thread(self.registry.replica_removed, replica.weights, replica.url)
        except VersionLogUnavailable as exc:  # followers keep it draining: it takes nothing
            log.warning("removal of %s not written: %s", replica.url, exc)
        log.info(
            "replica %s (%s) retired after %.0f ms",
            replica.url,
            replica.weights,
            (time.perf_counter() - t0) * 1000,
        )

    async def _tell_draining(self, replica: Replica) -> None:
        """Every gateway stops routing to `replica` (a version event); a SwapError, and nothing
        changed, while the versions topic cannot take it."""
        try:
            await asyncio.to_thread(self.registry.replica_draining, replica.weights, replica.url)
        except VersionLogUnavailable as exc:
            raise SwapError(f"could not tell the gateways {replica.url} is draining: {exc}") from exc

    async def _drained(self, replica: Replica, told: float) -> None:
        """Our requests on `replica` done, then the fleet's (`weights.quiet`)."""
        deadline = time.monotonic() + self.drain_timeout_s
        while replica.outstanding > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if replica.outstanding > 0:
            replica.draining = False
            await self._announce(replica.weights, {"replica": replica.url, "mode": "restored"})
            raise SwapError(f"{replica.url} still has {replica.outstanding} requests after draining")
        await quiet(replica.url, told + self.follower_drain_s, self.requests_on)

    async def _restore(self, replica: Replica, old: str) -> None:
        try:
            await self.reloader.reload(replica.url, self.weights_path(old))
            replica.weights = old
        except SwapError as exc:  # it holds unknown weights now: keep it out of routing
            log.error("replica %s could not be restored to %s: %s", replica.url, old, exc)
            replica.weights = f"unknown:{old}"

    async def _done(
        self, figures: dict[str, Any], weights: str, route: float, load: float, warm: float
    ) -> None:
        figures["done_at"] = round(time.time(), 3)
        figures |= {
            "route_ms": round(route * 1000, 1),
            "load_ms": round(load * 1000, 1),
            "warm_ms": round(warm * 1000, 1),
        }
        self.swaps.append(figures)
        await self._announce(weights, figures)

    async def _announce(self, weights: str, figures: dict[str, Any]) -> None:
        """The `resident` event: every replica holding `weights` (routed to again, everywhere)."""
        holding = [r.url for r in self.pool.replicas if r.weights == weights]
        try:  # a version event: written to the versions topic off the event loop
            await asyncio.to_thread(self.registry.resident, weights, holding, figures)
        except VersionLogUnavailable as exc:  # the pool holds it all the same; the next swap tells
            log.warning("resident event of %s not written: %s", weights, exc)
