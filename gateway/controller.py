"""The version controller: publish a registered version into the pool, canary it, decide.

`register` loads the adapter into every replica at once and returns when all answered; the
"loaded" event carries the figures (`queued_ms` waiting behind another register, `load_ms`
per replica). A loop every `interval_s`: load active adapters into replicas that lack them (a
replica that rejoined, or a new one), judge the canary (gateway/canary.py) unless it is
pinned, and unload retired versions once they are out of the recent episodes' history.

Registers take turns (one lock), but the loop never holds that lock while it waits on a
replica: a register is never queued behind the loop's loads and unloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from itertools import islice
from typing import Any

from gateway.adapters import AdapterError, AdapterLoader
from gateway.canary import decide
from gateway.pool import Pool
from gateway.routing import BASE_VERSION
from gateway.versions import Version, VersionRegistry

log = logging.getLogger(__name__)
KEEP_LOADED = 1  # retired versions kept loaded for instant rollback (vLLM holds few adapters at once)
ADAPTER_SLOTS = 3 + KEEP_LOADED  # the base's zero adapter, serving, canary, and the retired kept


class VersionController:
    def __init__(self, registry: VersionRegistry, pool: Pool, *, interval_s: float = 1.0) -> None:
        self.registry, self.pool, self.interval_s = registry, pool, interval_s
        self.loader = AdapterLoader(pool)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # registers (and canary_now) one at a time
        self._tick_lock = asyncio.Lock()  # ticks one at a time

    async def register(
        self,
        vid: str,
        adapter_path: str,
        parent: str | None,
        data_window: dict[str, Any],
        base_equivalent: bool,
        traceparent: str | None = None,
    ) -> Version:
        """Register, load into every replica, then start its canary (or serve it as the base)."""
        reg = self.registry
        asked = time.perf_counter()
        async with self._lock:
            queued_ms = round((time.perf_counter() - asked) * 1000, 1)
            known = reg.versions.get(vid)
            if known is not None and known.adapter_path == adapter_path and known.status != "failed":
                return known  # a learner that restarted re-publishes its last version: harmless
            if base_equivalent:
                name = f"rlgw-base-{vid}"
                if reg.base_adapter == name:
                    return reg.versions[BASE_VERSION]
                outcome, _ = await self.loader.load_everywhere(name, adapter_path)
                if not outcome or any(s != "loaded" for s in outcome.values()):
                    raise AdapterError(f"base adapter not loaded everywhere: {outcome}")
                reg.base_adapter = name
                base = reg.versions[BASE_VERSION]
                base.adapter_path, base.replicas = adapter_path, outcome
                reg.event(base, "base_adapter", f"base served through zero adapter {name}", {"adapter": name})
                return base
            v = reg.register(vid, adapter_path, parent, data_window, traceparent)
            v.replicas, load_ms = await self.loader.load_everywhere(v.adapter_name, adapter_path)
            figures = {"queued_ms": queued_ms, "load_ms": load_ms}
            if not v.replicas or any(s != "loaded" for s in v.replicas.values()):
                v.status = "failed"
                reg.event(v, "load_failed", str(v.replicas), figures)
                return v
            v.status = "loaded"
            reg.event(v, "loaded", f"on {len(v.replicas)} replicas", figures)
            if reg.canary is None:
                reg.start_canary(v)
            return v

    async def ensure_loaded(self, v: Version) -> None:
        """Load `v`'s adapter into every healthy replica that lacks it (a retired version that
        was unloaded, promoted or rolled back to again), before routing goes to it: switched
        first, its requests would meet replicas without the adapter until the next tick.
        Ticks wait meanwhile, so an unload in flight cannot undo the load."""
        if v.id == BASE_VERSION or not v.adapter_path:
            return
        async with self._tick_lock:
            lacking = [r for r in self.pool.healthy() if v.adapter_name not in r.models]
            outcome, _ = await self.loader.load_everywhere(v.adapter_name, v.adapter_path, lacking)
            failed = [f"{url}: {state}" for url, state in outcome.items() if state != "loaded"]
            if failed:
                raise AdapterError(f"version {v.id} could not be loaded again: {'; '.join(failed)}")
            v.unloaded = False
            if lacking:
                self.registry.event(v, "reloaded", f"on {len(lacking)} replicas, before routing to it")

    async def canary_now(self, vid: str) -> None:
        """Put a registered version into canary at once, ahead of any queued ones (drills)."""
        async with self._lock:
            self.registry.start_canary(self.registry.get(vid))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rlgw-versions")

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
            self._judge()
            await self._unload_stale()

    def _active(self) -> list[tuple[str, str]]:
        reg = self.registry
        out = [
            (v.adapter_name, v.adapter_path)
            for v in reg.versions.values()
            if v.adapter_path and v.id != BASE_VERSION and v.status in ("serving", "canary", "loaded")
        ]
        for name, _ in out:
            reg.versions.get(name.removeprefix("rlgw-"), Version("", None, None, "")).unloaded = False
        base = reg.versions[BASE_VERSION]
        if reg.base_adapter and base.adapter_path:
            out.append((reg.base_adapter, base.adapter_path))
        return out

    async def _reconcile(self) -> None:
        missing = [
            (replica, name, path)
            for replica in self.pool.healthy()
            for name, path in self._active()
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

    def _next_canary(self) -> None:
        """A version that arrived while another was canaried waits; the newest one goes next."""
        reg = self.registry
        queued = [v for v in reg.versions.values() if v.status == "loaded"]
        if reg.canary is not None or not queued:
            return
        for older in queued[:-1]:
            older.status = "retired"
            reg.event(older, "skipped", f"superseded by {queued[-1].id} before its canary")
        reg.start_canary(queued[-1])

    def _judge(self) -> None:
        """Judge the canary against the version serving beside it, over the same window."""
        reg = self.registry
        self._next_canary()
        if reg.canary is None:
            return
        canary = reg.versions[reg.canary]
        if canary.pinned or canary.canary_since is None:
            return
        arm = reg.stats.arm(canary.id, canary.canary_since)
        decision = decide(arm, reg.stats.arm(reg.serving, canary.canary_since), reg.cfg)
        if decision is None:
            if arm.n >= reg.cfg.max_canary_episodes:  # neither better nor worse: make way
                canary.status = "retired"
                reg.canary = None
                reg.event(canary, "inconclusive", f"no decision after {arm.n} episodes", {"canary_n": arm.n})
                self._next_canary()
            return
        log.info("version %s: %s (%s)", canary.id, decision.action, decision.reason)
        if decision.action == "promote":
            reg.promote(canary.id, decision.reason, dict(decision.figures))
        else:
            reg.rollback(canary.id, decision.reason, dict(decision.figures))
        self._next_canary()

    async def _unload_stale(self) -> None:
        reg = self.registry
        retired = [
            v
            for v in reg.versions.values()
            if v.status in ("retired", "rolled_back") and v.adapter_path and not v.unloaded
        ]
        recent = set(islice(reversed(reg._sticky.values()), 1000))  # recent episodes may still come back
        stale = (
            [v for v in retired[:-KEEP_LOADED] if v.id not in recent] if len(retired) > KEEP_LOADED else []
        )
        for v in stale:
            v.unloaded = True  # routing leaves it before the replicas drop it
        calls = [(v, r) for v in stale for r in self.pool.replicas if v.adapter_name in r.models]
        await asyncio.gather(*(self.loader.unload(r, v.adapter_name) for v, r in calls))
        for v in stale:
            reg.event(v, "unloaded")  # one promoted again meanwhile is loaded back by the next reconcile
