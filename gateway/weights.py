"""The two ways full weights reach a replica (docs/full-weights.md), and the probe that checks one.

- `InPlaceReloader`: vLLM's weight reload on a running replica — `POST {root}/collective_rpc`
  `{"method": "reload_weights", "kwargs": {"weights_path": DIR}}`, then
  `POST {root}/reset_prefix_cache` (cached prefixes were computed with the old weights). Both
  routes exist only when the replica runs with `VLLM_SERVER_DEV_MODE=1`.
- `ReplicaLauncher`: start a replica on a weights folder and stop it again (rolling swaps).
  `LocalVllmLauncher` runs vLLM children on this machine (gateway/engine.py); at scale the
  orchestrator does this (docs/full-weights.md). `FakeLauncher` starts fake replicas.

Errors: every failure here is a `SwapError`; the rollout (gateway/rollout.py) classifies it
once and leaves routing where it was.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

RESET_TRIES = 250  # × 20 ms


class SwapError(Exception):
    """Weights could not be loaded into a replica, or the replica failed its probe."""


def root_of(url: str) -> str:
    """The server root of a replica's /v1 base URL (the dev routes live there)."""
    return url.rstrip("/").removesuffix("/v1")


async def probe(url: str, model: str, timeout_s: float = 60.0) -> float:
    """One short chat request to a replica (its /v1 URL); the seconds it took. A replica that
    answers it is ready for traffic, and its first-request costs are paid."""
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            resp = await client.post(url.rstrip("/") + "/chat/completions", json=body)
    except httpx.HTTPError as exc:
        raise SwapError(f"probe of {url} failed: {exc!r}") from exc
    if resp.status_code != 200:
        raise SwapError(f"probe of {url} answered {resp.status_code}: {resp.text[:300]}")
    return time.perf_counter() - started


ENGINE_QUEUE = ("vllm:num_requests_running", "vllm:num_requests_waiting")  # docs/full-weights.md


QUIET_S = 1.0  # a replica no gateway sends requests to any more: none on it for this long


def ties_embeddings(folder: str) -> bool:
    """Whether a model folder's config ties the LM head to the input embeddings (transformers'
    default for a config that does not say: False)."""
    try:
        return bool(json.loads((Path(folder) / "config.json").read_text()).get("tie_word_embeddings", False))
    except (OSError, ValueError):
        return False


async def requests_on(url: str, timeout_s: float = 5.0) -> int | None:
    """Requests running or waiting on a replica (its /v1 URL), every gateway's together, from
    its Prometheus /metrics (vLLM's `ENGINE_QUEUE` gauges); None when it does not say: another
    engine, or not reachable."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            resp = await client.get(root_of(url) + "/metrics")
    except httpx.HTTPError:
        return None
    return engine_queue(resp.text) if resp.status_code == 200 else None


def engine_queue(metrics: str) -> int | None:
    """The sum of the `ENGINE_QUEUE` gauges in a Prometheus text exposition (None: neither)."""
    total, seen = 0.0, False
    for line in metrics.splitlines():
        if line.split("{", 1)[0].split(" ", 1)[0] in ENGINE_QUEUE:
            total, seen = total + float(line.rsplit(" ", 1)[1]), True
    return round(total) if seen else None


async def quiet(url: str, deadline: float, count: Any = requests_on) -> None:
    """Until a replica reports no request running or waiting (`count(url)`) for QUIET_S: no
    gateway routes to it any more and their requests on it ended; or until `deadline`
    (perf_counter) passes. A replica that does not report them is given until `deadline`."""
    quiet_since = None
    while (now := time.perf_counter()) < deadline:
        busy = await count(url)
        if busy is None:
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
            return
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= QUIET_S:
            return
        await asyncio.sleep(0.05)


class InPlaceReloader:
    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s

    async def reload(self, url: str, weights_path: str) -> None:
        root = root_of(url)
        body = {"method": "reload_weights", "kwargs": {"weights_path": weights_path}}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.post(root + "/collective_rpc", json=body)
                if resp.status_code == 404:
                    raise SwapError(
                        f"{root} has no /collective_rpc: start it with VLLM_SERVER_DEV_MODE=1 "
                        "or use versions.full_weights = 'rolling'"
                    )
                if resp.status_code != 200:
                    raise SwapError(f"{root} refused reload_weights: {resp.status_code} {resp.text[:300]}")
                await self._reset_prefix_cache(client, root)
        except httpx.HTTPError as exc:
            raise SwapError(f"reloading {root} failed: {exc!r}") from exc

    async def _reset_prefix_cache(self, client: httpx.AsyncClient, root: str) -> None:
        """vLLM refuses the reset (`success: false`) while blocks are still held — briefly, after
        the last drained request: retry until it succeeds. Cached prefixes computed with the
        old weights would otherwise serve the new ones (docs/full-weights.md)."""
        for _ in range(RESET_TRIES):
            resp = await client.post(root + "/reset_prefix_cache")
            if resp.status_code != 200:
                raise SwapError(f"{root} did not reset its prefix cache: {resp.status_code}")
            if resp.json().get("success"):
                return
            await asyncio.sleep(0.02)
        raise SwapError(f"{root} kept refusing to reset its prefix cache")


class ReplicaLauncher(Protocol):
    async def start(self, weights_path: str, served_name: str) -> str:
        """Start a replica serving `weights_path` under `served_name`; its /v1 URL once ready."""
        ...

    async def stop(self, url: str) -> None: ...


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalVllmLauncher:
    """vLLM children on this machine, one per started replica (stopped by PID). `cores`: the
    core sets replicas take in turn, one not in use by another running replica (vLLM-CPU
    engines sharing a core starve each other, gateway/engine.py)."""

    def __init__(
        self,
        log_dir: str | Path | None = None,
        *,
        ready_timeout_s: float = 300.0,
        cores: list[str] | None = None,
        **engine: Any,
    ) -> None:
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="rlgw-replicas-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ready_timeout_s = ready_timeout_s
        self.cores: list[str | None] = [*cores] if cores else [None]
        self.engine = engine  # start_vllm keywords: lora, dtype, max_model_len
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.bound: dict[str, str | None] = {}  # url -> its cores

    async def start(self, weights_path: str, served_name: str) -> str:
        from gateway.engine import EngineStartError, start_vllm, stop_vllm, wait_ready

        port = _free_port()
        log = self.log_dir / f"replica-{port}.log"
        cpus = next((c for c in self.cores if c not in self.bound.values()), self.cores[0])
        proc = start_vllm(weights_path, port, log_path=log, served_name=served_name, cpus=cpus, **self.engine)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            await asyncio.to_thread(wait_ready, url, self.ready_timeout_s, proc=proc, log_path=log)
        except EngineStartError as exc:
            await asyncio.to_thread(stop_vllm, proc)
            raise SwapError(f"replica on {weights_path} did not start: {exc}") from exc
        except BaseException:  # cancelled or interrupted while it starts: not left running
            stop_vllm(proc)
            raise
        self.procs[url], self.bound[url] = proc, cpus
        return url

    async def stop(self, url: str) -> None:
        from gateway.engine import stop_vllm

        proc = self.procs.pop(url, None)
        self.bound.pop(url, None)
        if proc is not None:
            await asyncio.to_thread(stop_vllm, proc)

    async def close(self) -> None:
        for url in list(self.procs):
            await self.stop(url)


class FakeLauncher:
    """Fake replicas (gateway/fake_upstream.py) in this event loop, each serving one folder."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.runners: dict[str, Any] = {}
        self.started: list[str] = []  # weights paths, in order

    async def start(self, weights_path: str, served_name: str) -> str:
        from aiohttp import web

        from gateway.fake_upstream import FakeState, make_app

        await asyncio.sleep(self.delay_s)
        state = FakeState(base_model=served_name, weights=weights_path, keep_requests=False)
        runner = web.AppRunner(make_app(state))
        await runner.setup()
        port = _free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}/v1"
        self.runners[url] = runner
        self.started.append(weights_path)
        return url

    async def stop(self, url: str) -> None:
        runner = self.runners.pop(url, None)
        if runner is not None:
            await runner.cleanup()

    async def close(self) -> None:
        for url in list(self.runners):
            await self.stop(url)
