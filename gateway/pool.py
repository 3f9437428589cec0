"""The serving pool: OpenAI-compatible replicas behind one client.

Balancing is least-outstanding-requests over healthy replicas. A replica that refuses a
connection (or answers 503 before generating anything) is marked unhealthy and the request
goes to another one — only before any byte has reached the client. A background probe
(`GET {url}/models`) marks replicas healthy again and learns each one's model names; a replica
first seen healthy, or back after being down, is also asked whether it returns token ids and
log-probs (gateway/capabilities.py). A request body may depend on the replica it goes to.

With full-weight versions (docs/full-weights.md) each replica holds one set of weights
(`Replica.weights`, a version id) and a request names the replicas that hold its version
(`only`); a replica being swapped is `draining` and the router leaves it out.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson

from gateway.capabilities import probe_tokens
from gateway.errors import NoReplica, UpstreamError, UpstreamTimeout
from gateway.upstream import ConnectFailed, Endpoint, Response, UpstreamIOError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {502, 503}
SLOW_PROBES_DOWN = 3  # consecutive timed-out probes that mark a replica unhealthy


@dataclass
class Replica:
    url: str  # base URL ending in /v1
    healthy: bool = True
    outstanding: int = 0
    models: list[str] = field(default_factory=list)
    last_error: str = ""
    checked_at: float = 0.0
    slow_probes: int = 0  # consecutive probes that timed out
    endpoint: Endpoint = field(init=False, repr=False)
    adapters_changed_at: float = 0.0  # monotonic time of our last adapter load / unload on it
    weights: str = "base"  # the version whose full weights it serves (its start weights: base)
    draining: bool = False  # being swapped: no new requests route to it
    launched: bool = False  # started by the gateway's launcher (rolling swaps), stopped by it
    tokens: bool | None = None  # returns token ids and log-probs (None: not known yet, asked for)

    def adapter_changed(self, name: str, loaded: bool) -> None:
        """Record a load or unload this gateway just made, ahead of the next probe's listing."""
        if loaded and name not in self.models:
            self.models.append(name)
        elif not loaded and name in self.models:
            self.models.remove(name)
        self.adapters_changed_at = time.monotonic()

    def __post_init__(self) -> None:
        self.endpoint = Endpoint(self.url)


def normalise(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class Pool:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        connect_timeout_s: float = 2.0,
        request_timeout_s: float = 120.0,
        health_interval_s: float = 2.0,
    ) -> None:
        if not urls:
            raise ValueError("the pool needs at least one upstream URL")
        self.replicas = [Replica(normalise(u)) for u in urls]
        for r in self.replicas:
            r.endpoint.connect_timeout_s = connect_timeout_s
        self._connect_timeout = connect_timeout_s
        self._request_timeout = request_timeout_s
        self._health_interval = health_interval_s
        self._rr = itertools.count()
        self._health_task: asyncio.Task[None] | None = None
        self.live_arrived: list[Callable[[Replica], None]] = []
        """Called when a live (not `background`) request is routed to a replica, before it is
        sent: evaluation requests there yield to it (gateway/eval_admission.py)."""

    async def start(self) -> None:
        await self.check_all()
        self._health_task = asyncio.create_task(self._health_loop(), name="rlgw-health")

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        for r in self.replicas:
            await r.endpoint.close()

    def add(self, url: str, *, weights: str, launched: bool = True) -> Replica:
        """A replica joins (a rolling swap started it): it serves `weights`."""
        replica = Replica(normalise(url), weights=weights, launched=launched)
        replica.endpoint.connect_timeout_s = self._connect_timeout
        self.replicas = [*self.replicas, replica]  # a new list: loops over the old one stay valid
        return replica

    async def remove(self, replica: Replica) -> None:
        self.replicas = [r for r in self.replicas if r is not replica]
        await replica.endpoint.close()

    def healthy(self) -> list[Replica]:
        return [r for r in self.replicas if r.healthy]

    def pick(self, exclude: set[str], only: frozenset[str] | None = None) -> Replica:
        allowed = self.replicas if only is None else [r for r in self.replicas if r.url in only]
        candidates = [r for r in allowed if r.healthy and r.url not in exclude]
        if not candidates:
            # Every replica looks down: try the ones not yet tried anyway (health may be stale).
            candidates = [r for r in allowed if r.url not in exclude]
        if not candidates:
            raise NoReplica("no upstream replica is reachable", code="no_healthy_replica")
        low = min(r.outstanding for r in candidates)
        best = [r for r in candidates if r.outstanding == low]
        return best[next(self._rr) % len(best)]

    @asynccontextmanager
    async def post(
        self,
        path: str,
        body: bytes | Callable[[Replica], bytes],
        only: frozenset[str] | None = None,
        *,
        background: bool = False,
    ) -> AsyncIterator[tuple[Replica, Response]]:
        """POST to the least-loaded healthy replica (of `only`), failing over on connect errors / 503.
        `body` may be a function of the replica (what it supports shapes the request); a
        `background` request (evaluation) does not call `live_arrived`."""
        tried: set[str] = set()
        reachable = len(self.replicas) if only is None else len(only)
        while True:
            replica = self.pick(tried, only)
            tried.add(replica.url)
            replica.outstanding += 1
            try:
                if not background:
                    for arrived in self.live_arrived:
                        arrived(replica)
                data = body(replica) if callable(body) else body
                try:
                    resp = await replica.endpoint.request("POST", path, data, timeout_s=self._request_timeout)
                except ConnectFailed as exc:
                    self._mark_down(replica, f"connect: {exc}")
                    if len(tried) >= reachable:
                        raise UpstreamError(
                            f"upstream unreachable: {exc}", code="upstream_unreachable"
                        ) from exc
                    continue
                except TimeoutError as exc:
                    raise UpstreamTimeout("upstream did not answer in time", code="upstream_timeout") from exc
                except UpstreamIOError as exc:
                    raise UpstreamError(f"upstream failed: {exc}", code="upstream_error") from exc
                if resp.status in RETRYABLE_STATUS and len(tried) < reachable:
                    resp.release()
                    self._mark_down(replica, f"status {resp.status}")
                    continue
                try:
                    yield replica, resp
                finally:
                    resp.release()
                return
            finally:
                replica.outstanding -= 1

    def _mark_down(self, replica: Replica, why: str) -> None:
        if replica.healthy:
            log.warning("replica %s marked unhealthy: %s", replica.url, why)
        replica.healthy, replica.last_error = False, why
        replica.tokens = None  # what comes back may be another server: ask it again

    async def _probe_tokens(self, replica: Replica) -> None:
        """Ask a replica whether it returns token ids and log-probs (once per recovery)."""
        if replica.tokens is not None or not replica.models:
            return
        timeout_s = max(self._connect_timeout, 1.0) * 5
        replica.tokens = await probe_tokens(replica.endpoint, replica.models[0], timeout_s)
        if replica.tokens is False:
            log.warning(
                "replica %s does not return token ids / log-probs: its turns are recorded without "
                "them (the learner skips such turns)",
                replica.url,
            )

    async def check(self, replica: Replica) -> bool:
        asked_at = time.monotonic()
        try:
            timeout_s = max(self._connect_timeout, 1.0) * 2
            resp = await replica.endpoint.request("GET", "/models", timeout_s=timeout_s)
            raw = await resp.read()
            if resp.status != 200:
                raise UpstreamError(f"status {resp.status}")
            data = orjson.loads(raw)
            if replica.adapters_changed_at < asked_at:  # else a load landed meanwhile: listing is stale
                replica.models = [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]
            if not replica.healthy:
                log.info("replica %s is healthy again", replica.url)
            replica.healthy, replica.last_error, replica.slow_probes = True, "", 0
            await self._probe_tokens(replica)
        except TimeoutError as exc:
            # A busy engine may answer a probe late; a dead one refuses connections (below).
            replica.slow_probes += 1
            if replica.slow_probes >= SLOW_PROBES_DOWN:
                self._mark_down(replica, f"health: {replica.slow_probes} probes timed out ({exc!r})")
        except (UpstreamIOError, UpstreamError, ValueError, AttributeError) as exc:
            self._mark_down(replica, f"health: {exc!r}")
        replica.checked_at = time.time()
        return replica.healthy

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(r) for r in self.replicas))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            try:
                await self.check_all()
            except Exception:  # the loop must outlive any one probe
                log.exception("health check failed")

    def base_model(self) -> str | None:
        """The first model name a healthy replica serves (vLLM lists the base model first)."""
        for r in self.healthy() or self.replicas:
            if r.models:
                return r.models[0]
        return None
