"""Loading version adapters into every replica (vLLM's runtime LoRA API), and unloading them.

Each version loads under a new name and path; an in-place reload would switch requests that
are already running to new weights mid-sequence. Only transient failures are retried
(connection errors, 502/503/504); a 4xx or 500 is the adapter's fault and is final.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from gateway.pool import Pool, Replica
from gateway.upstream import UpstreamIOError

log = logging.getLogger(__name__)
TRANSIENT = {502, 503, 504}


class AdapterError(Exception):
    pass


class AdapterLoader:
    def __init__(self, pool: Pool, *, attempts: int = 4, backoff_s: float = 0.25) -> None:
        self.pool, self.attempts, self.backoff_s = pool, attempts, backoff_s

    async def _post(self, replica: Replica, route: str, body: dict[str, object]) -> tuple[int, str]:
        resp = await replica.endpoint.request("POST", route, orjson.dumps(body), timeout_s=60)
        return resp.status, (await resp.read())[:500].decode(errors="replace")

    async def load(self, replica: Replica, name: str, path: str) -> None:
        body: dict[str, object] = {"lora_name": name, "lora_path": path}
        for attempt in range(self.attempts):
            try:
                status, text = await self._post(replica, "/load_lora_adapter", body)
            except (UpstreamIOError, TimeoutError) as exc:
                status, text = 0, repr(exc)
            if status == 200 or (status == 400 and "already" in text.lower()):
                replica.adapter_changed(name, loaded=True)
                return
            if status and status not in TRANSIENT:
                raise AdapterError(f"{replica.url} refused adapter {name}: {status} {text}")
            await asyncio.sleep(self.backoff_s * 2**attempt)
        raise AdapterError(f"{replica.url} did not load adapter {name} after {self.attempts} tries: {text}")

    async def unload(self, replica: Replica, name: str) -> None:
        try:
            status, _ = await self._post(replica, "/unload_lora_adapter", {"lora_name": name})
        except (UpstreamIOError, TimeoutError) as exc:
            log.warning("unloading %s from %s failed: %r", name, replica.url, exc)
            return
        if status == 200:
            replica.adapter_changed(name, loaded=False)

    async def load_everywhere(
        self, name: str, path: str, replicas: list[Replica] | None = None
    ) -> tuple[dict[str, str], dict[str, float]]:
        """Load on every healthy replica (or on `replicas`) at once: each replica's outcome
        ("loaded" or "error: ..."), and its time in ms."""
        replicas = self.pool.healthy() if replicas is None else replicas
        results = await asyncio.gather(
            *(self._timed_load(r, name, path) for r in replicas), return_exceptions=True
        )
        outcome = {
            r.url: "loaded" if isinstance(res, float) else f"error: {res}"
            for r, res in zip(replicas, results, strict=True)
        }
        load_ms = {r.url: res for r, res in zip(replicas, results, strict=True) if isinstance(res, float)}
        return outcome, load_ms

    async def _timed_load(self, replica: Replica, name: str, path: str) -> float:
        started = time.perf_counter()
        await self.load(replica, name, path)
        return round((time.perf_counter() - started) * 1000, 1)
