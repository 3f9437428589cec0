"""The version controller: publish a registered version into the pool, canary it, decide.

`register` loads the adapter into every replica at once and returns when all answered; the
"loaded" event carries the figures (`queued_ms` waiting behind another register, `load_ms`
per replica). A loop every `interval_s`: load active adapters into replicas that lack them (a
replica that rejoined, or a new one), judge the canary (gateway/canary.py) unless it is
pinned, and unload retired versions once they are out of the recent episodes' history.

Registers take turns (one lock), but the loop never holds that lock while it waits on a
replica: a register is never queued behind the loop's loads and unloads. Every registry change
writes its event to the versions topic before it applies (gateway/version_log.py): those calls
run in a worker thread, so the server's loop never waits on the bus; while the topic cannot
be written, a change is not made (the tick logs it and tries again next time).

A full-weight version (`kind="full"`) is not an adapter: gateway/rollout.py puts its weights on
replicas of their own (in place or rolling, `versions.full_weights`), and each tick converges
the pool toward the serving and canary versions' weights.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.adapters import AdapterError, AdapterLoader
from gateway.canary import decide
from gateway.drift import shifts
from gateway.errors import InvalidRequest
from gateway.judge_alarms import blocks
from gateway.pool import Pool
from gateway.rollout import FullWeightRollout
from gateway.version_state import Version
from gateway.versions import VersionRegistry
from gateway.weights import SwapError
from ledger.published import BASE_VERSION, PublishedVersion

log = logging.getLogger(__name__)
KEEP_LOADED = 1  # retired versions kept loaded for instant rollback (vLLM holds few adapters at once)
RECENT_EPISODES = 1000  # a retired version these episodes stay on is kept loaded: they may come back
FOLLOW_INTERVAL_S = 0.1  # a follower's pool catches up with placement events this often
ADAPTER_SLOTS = 3 + KEEP_LOADED  # the base's zero adapter, serving, canary, and the retired kept


class VersionController:
    def __init__(
        self, registry: VersionRegistry, pool: Pool, *, interval_s: float = 1.0, launcher: Any = None
    ) -> None:
        self.registry, self.pool, self.interval_s = registry, pool, interval_s
        self.loader = AdapterLoader(pool)
        cfg = registry.cfg
        self.rollout = FullWeightRollout(
            registry, pool, mode=cfg.full_weights, base_weights=cfg.base_weights, launcher=launcher
        )
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # registers (and canary_now) one at a time
        self._tick_lock = asyncio.Lock()  # ticks one at a time
        self.caught_up: Callable[[], bool] = lambda: True  # the feeds have read the topics (fleet.py)
        self._soon: asyncio.Task[None] | None = None  # a tick asked for ahead of the interval

    async def register(self, published: PublishedVersion) -> Version:
        """Register, load into every replica, then start its canary (or serve it as the base)."""
        reg = self.registry
        vid, adapter_path = published.version, published.adapter_path
        asked = time.perf_counter()
        async with self._lock:
            queued_ms = round((time.perf_counter() - asked) * 1000, 1)
            known = reg.versions.get(vid)
            if known is not None and known.adapter_path == adapter_path and known.status != "failed":
                return known  # a learner that restarted re-publishes its last version: harmless
            if published.base_equivalent:
                name = f"rlgw-base-{vid}"
                if reg.base_adapter == name:
                    return reg.versions[BASE_VERSION]
                outcome, _ = await self.loader.load_everywhere(name, adapter_path)
                if not outcome or any(s != "loaded" for s in outcome.values()):
                    raise AdapterError(f"base adapter not loaded everywhere: {outcome}")
                return await asyncio.to_thread(reg.serve_base_through, name, adapter_path, outcome)
            if published.kind == "full":
                return await self._register_full(published)
            v = await asyncio.to_thread(reg.register, published)
            replicas, load_ms = await self.loader.load_everywhere(v.adapter_name, adapter_path)
            figures = {"queued_ms": queued_ms, "load_ms": load_ms}
            return await asyncio.to_thread(reg.record_load, v, replicas, figures)

    async def _register_full(self, published: PublishedVersion) -> Version:
        """A full-weight version: checked, registered, canaried, and put on replicas of its own
        before routing sends it anything (routing skips a canary no replica holds yet)."""
        if not (Path(published.adapter_path) / "config.json").is_file():
            raise InvalidRequest(
                f"{published.adapter_path} is not a model folder (no config.json)", param="adapter_path"
            )
        reg = self.registry
        v = await asyncio.to_thread(reg.register, published)
        if await asyncio.to_thread(reg.full_loaded, v):
            async with self._tick_lock:
                try:
                    await self.rollout.converge()
                except SwapError as exc:
                    await asyncio.to_thread(reg.full_failed, v, str(exc))
        return v

    async def ensure_loaded(self, v: Version) -> None:
        """Load `v`'s adapter into every healthy replica that lacks it (a retired version that
        was unloaded, promoted or rolled back to again), before routing goes to it: switched
        first, its requests would meet replicas without the adapter until the next tick.
        Ticks wait meanwhile, so an unload in flight cannot undo the load. Full weights (its
        own, or the base's under an adapter) no replica holds are brought back first."""
        if v.kind == "full" or not self.rollout.resident(v.weights):
            async with self._tick_lock:
                try:
                    await self.rollout.ensure_resident(v.weights)
                except SwapError as exc:
                    raise AdapterError(f"version {v.id} could not be brought back: {exc}") from exc
            # the caller switches routing next, without awaiting: a tick then moves the other
            # replicas at once instead of at the next interval
            self._soon = asyncio.get_running_loop().create_task(self.tick())
            if v.kind == "full":
                return
        if v.id == BASE_VERSION or not v.adapter_path:
            return
        async with self._tick_lock:
            lacking = [r for r in self.pool.healthy() if v.adapter_name not in r.models]
            outcome, _ = await self.loader.load_everywhere(v.adapter_name, v.adapter_path, lacking)
            failed = [f"{url}: {state}" for url, state in outcome.items() if state != "loaded"]
            if failed:
                raise AdapterError(f"version {v.id} could not be loaded again: {'; '.join(failed)}")
            await asyncio.to_thread(self.registry.reloaded, v, len(lacking))

    async def canary_now(self, vid: str) -> None:
        """Put a registered version into canary at once, ahead of any queued ones (drills)."""
        async with self._lock:
            await asyncio.to_thread(self.registry.start_canary, self.registry.get(vid))

    def start(self) -> None:
        self.rollout.adopt()  # the replicas' full weights, as the restored version events say
        self._task = asyncio.create_task(self._loop(), name="rlgw-versions")

    def follow(self) -> None:
        """A following gateway: keep the pool's full-weight placement to the controlling
        gateway's events (gateway/rollout.py), every FOLLOW_INTERVAL_S."""
        self._task = asyncio.create_task(self._follow_loop(), name="rlgw-follow")

    async def _follow_loop(self) -> None:
        while True:
            try:
                await self.rollout.follow()
            except Exception:  # the loop must outlive any one pass
                log.exception("following the full-weight placement failed")
            await asyncio.sleep(FOLLOW_INTERVAL_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:
                log.exception("version controller tick failed")

    async def tick(self) -> None:
        async with self._tick_lock:
            await self._reconcile()
            await asyncio.to_thread(self._judge)
            try:
                await self.rollout.converge()
            except SwapError as exc:
                log.warning("full-weight swap failed (retried next tick): %s", exc)
            await self._unload_stale()

    async def _reconcile(self) -> None:
        missing = [
            (replica, name, path)
            for replica in self.pool.healthy()
            for name, path in self.registry.active_adapters()
            if name not in replica.models
        ]
        results = await asyncio.gather(
            *(self.loader.load(r, name, path) for r, name, path in missing), return_exceptions=True
        )
        for (replica, name, _), res in zip(missing, results, strict=True):
            if isinstance(res, AdapterError):
                log.warning("%s", res)
            elif isinstance(res, BaseException):
                raise res
            else:
                log.info("loaded %s into rejoined replica %s", name, replica.url)

    def _judge(self) -> None:
        """Judge the canary against the version serving beside it, over the same window (in
        a worker thread: each change waits for the versions topic)."""
        reg = self.registry
        if not self.caught_up():
            return  # a gateway that just started: not before its feeds have read the topics
        reg.next_canary()
        if reg.canary is None:
            return
        canary = reg.versions[reg.canary]
        if canary.pinned or canary.canary_since is None:
            return
        self._alarms(canary)
        arm = reg.stats.arm(canary.id, canary.canary_since)
        decision = decide(arm, reg.stats.arm(reg.serving, canary.canary_since), reg.cfg)
        if decision is None:
            return
        alarms = [*canary.alarms, *reg.judges.active()]  # the judges': every reward is in doubt
        blocking = sorted(m for m in alarms if blocks(m, reg.cfg.block_promotion_on))
        if decision.action == "promote" and blocking:
            if not canary.promotion_blocked:
                reason = f"{decision.reason}, but alarms on {', '.join(blocking)}"
                reg.block_promotion(canary, reason, dict(decision.figures))
            return  # an operator promotes or rolls back; it may still be rolled back or retired
        log.info("version %s: %s (%s)", canary.id, decision.action, decision.reason)
        if decision.action == "promote":
            reg.promote(canary.id, decision.reason, dict(decision.figures))
        elif decision.action == "inconclusive":  # neither better nor worse: make way
            reg.end_canary(decision.reason, dict(decision.figures))
        else:
            reg.rollback(canary.id, decision.reason, dict(decision.figures))
        reg.next_canary()

    def _alarms(self, canary: Version) -> None:
        """Raise an alarm for each side metric of the canary newly shifted from its parent's."""
        reg = self.registry
        assert canary.canary_since is not None
        mine = reg.side.since(canary.id, canary.canary_since)
        found = shifts(
            {m: xs for m, xs in mine.items() if m not in canary.alarms},  # raised ones stay raised
            reg.side.since(reg.serving, canary.canary_since),
            reg.cfg.alarm_sigmas,
            reg.cfg.alarm_min_samples,
        )
        for s in found:
            if s.metric not in canary.alarms:
                reason = (
                    f"{s.metric}: {s.canary_mean:.3g} against {s.parent_mean:.3g} on {reg.serving} "
                    f"({s.sigmas:+.1f} standard errors)"
                )
                log.warning("version %s: alarm, %s", canary.id, reason)
                reg.alarm(canary, reason, s.figures())

    async def _unload_stale(self) -> None:
        stale = self.registry.take_out_stale(KEEP_LOADED, RECENT_EPISODES)
        calls = [(v, r) for v in stale for r in self.pool.replicas if v.adapter_name in r.models]
        await asyncio.gather(*(self.loader.unload(r, v.adapter_name) for v, r in calls))
        for v in stale:
            await asyncio.to_thread(self.registry.unloaded, v)
