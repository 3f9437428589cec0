"""What the swap benchmarks share (benchmarks/hot_swap.py, full_swap.py, full_cycle.py): a
gateway served in this process on a memory bus, closed-loop chat clients counted per phase
while versions change, and the p50 / p90 / max of a phase's durations."""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Rig:
    """A gateway serving on `root` from a thread of this process, recording to `bus`."""

    app: Any
    server: Any
    root: str
    bus: Any

    @property
    def services(self) -> Any:
        return self.app.services

    def close(self) -> None:
        self.server.should_exit = True


def serve_gateway(settings: Any, upstreams: list[str]) -> Rig:
    """`settings`' gateway on `upstreams`, on a free port, its recorder on a memory bus."""
    import uvicorn

    from gateway import setup_gateway
    from ledger.bus import MemoryBus
    from ledger.recorder import Recorder
    from rlgw.stack import free_port, uvicorn_config

    settings.gateway.upstreams = upstreams
    settings.gateway.port = free_port()
    bus = MemoryBus()
    app = setup_gateway(settings, recorder=Recorder(bus).start())
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", settings.gateway.port))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return Rig(app, server, f"http://127.0.0.1:{settings.gateway.port}", bus)


class SwapLoad:
    """`clients` posting `body` back to back while versions swap, counted ok / failed / wrong
    in all (`counts`) and per `phase` (the caller names it as it goes; a request counts in the
    phase it started in): wrong when the version that answered could not serve at any time
    during the request (`live[version]`: its windows `[since, until]`, kept by the caller)."""

    def __init__(self, root: str, body: dict[str, Any], clients: int, *, timeout: float) -> None:
        self.root, self.body, self.timeout = root, body, timeout
        self.live: dict[str, list[list[float]]] = {"base": [[0.0, math.inf]]}
        self.counts = {"ok": 0, "failed": 0, "wrong": 0}
        self.phase = "run"
        self.by_phase: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(_gather(self._client, clients)), daemon=True
        )

    def start(self) -> SwapLoad:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def _count(self, phase: str, outcome: str) -> None:
        self.counts[outcome] += 1
        counts = self.by_phase.setdefault(phase, {"ok": 0, "failed": 0, "wrong": 0})
        counts[outcome] += 1

    async def _client(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            while not self._stop.is_set():
                started, phase = time.perf_counter(), self.phase
                try:
                    r = await http.post(self.root + "/v1/chat/completions", json=self.body)
                except httpx.HTTPError:
                    self._count(phase, "failed")
                    continue
                windows = self.live.get(r.headers.get("x-model-version", ""), [])
                if r.status_code != 200:
                    self._count(phase, "failed")
                elif not any(_overlaps(w, started, time.perf_counter()) for w in windows):
                    self._count(phase, "wrong")
                else:
                    self._count(phase, "ok")


def _overlaps(window: list[float], start: float, end: float) -> bool:
    return window[0] <= end and window[1] >= start


def figures(xs: list[float]) -> dict[str, float]:
    ordered = sorted(xs)
    return {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
        "max_at": xs.index(ordered[-1]),  # the swap it happened in (0-based)
    }


async def _gather(fn, n: int) -> None:  # type: ignore[no-untyped-def]
    await asyncio.gather(*(fn() for _ in range(n)))
