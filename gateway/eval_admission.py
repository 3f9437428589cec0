"""When evaluation requests may use the serving pool (docs/versions.md, "Evaluation traffic and
spare capacity"). Two rules:

**Spare capacity.** An evaluation request starts only while fewer than `eval_concurrency`
evaluation requests run and fewer than `eval_live_limit` live requests per healthy replica are
in flight; otherwise it waits (10 ms polls, up to `wait_s`, then 503 `eval_no_capacity`). A
live request never waits in the gateway for an evaluation request.

**Yield** (`eval_yield`, on by default). An evaluation request starts only on a replica with no
live request in flight, and when a live request is routed to a replica (`Pool.live_arrived`)
the evaluation requests in flight there are pre-empted: their task is cancelled, which closes
the upstream connection (gateway/upstream.py closes an unfinished reply's connection; vLLM
aborts a request whose client went away), and each is sent again — the same body, so the same
seed and the same answer — once a replica of its route is idle. The starvation bound: a request
pre-empted `eval_max_preemptions` times, or that arrived more than `eval_yield_deadline_s` ago,
is admitted by the spare-capacity rule alone and runs to its end, shared with live requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.errors import NoReplica

T = TypeVar("T")
POLL_S = 0.01


class ReplicaLike(Protocol):
    url: str
    healthy: bool
    outstanding: int


class PoolLike(Protocol):
    replicas: list[Any]
    live_arrived: list[Callable[[Any], None]]

    def healthy(self) -> list[Any]: ...


@dataclass(eq=False)
class EvalCall:
    """One evaluation request through its attempts."""

    arrived: float
    preemptions: int = 0
    protected: bool = False  # past the starvation bound: not pre-empted any more
    preempted: bool = False  # the current attempt was cancelled for a live request
    replica: str | None = None  # the URL the current attempt went to
    task: asyncio.Task[Any] | None = field(default=None, repr=False)


class EvalAdmission:
    """Admits evaluation requests on spare capacity and makes them yield (module docstring)."""

    def __init__(
        self,
        pool: PoolLike,
        concurrency: int,
        live_limit: int,
        wait_s: float,
        *,
        yield_to_live: bool = False,
        max_preemptions: int = 3,
        deadline_s: float = 60.0,
        on_preempt: Callable[[], None] | None = None,
    ) -> None:
        self.pool, self.concurrency, self.live_limit, self.wait_s = pool, concurrency, live_limit, wait_s
        self.yield_to_live, self.max_preemptions, self.deadline_s = yield_to_live, max_preemptions, deadline_s
        self.on_preempt = on_preempt
        self.running = 0  # evaluation requests admitted (their replicas count them as outstanding)
        self.waited_s = 0.0  # total time evaluation requests waited for admission
        self.preemptions = 0  # attempts cancelled because a live request arrived
        self.forced = 0  # requests admitted past the yield rule (the starvation bound)
        self._on: dict[str, set[EvalCall]] = {}  # replica URL -> evaluation attempts sent there
        pool.live_arrived.append(self.live_arrived)

    def live(self) -> int:
        """Live requests in flight across the pool."""
        return max(0, sum(r.outstanding for r in self.pool.replicas) - self.running)

    def live_on(self, replica: ReplicaLike) -> int:
        """Live requests in flight on one replica."""
        return max(0, replica.outstanding - len(self._on.get(replica.url, ())))

    def spare(self) -> bool:
        healthy = max(1, len(self.pool.healthy()))
        return self.running < self.concurrency and self.live() < self.live_limit * healthy

    def idle(self, only: frozenset[str] | None) -> frozenset[str]:
        """The route's healthy replicas with no live request in flight."""
        return frozenset(
            r.url
            for r in self.pool.replicas
            if r.healthy and (only is None or r.url in only) and self.live_on(r) == 0
        )

    async def _admit(self, call: EvalCall, only: frozenset[str] | None) -> frozenset[str] | None:
        """Wait for admission; the replicas the attempt may go to."""
        start = time.monotonic()
        while True:
            now = time.monotonic()
            call.protected = not self.yield_to_live or (
                call.preemptions >= self.max_preemptions or now - call.arrived >= self.deadline_s
            )
            if call.protected and self.spare():
                targets = only
                if self.yield_to_live:
                    self.forced += 1
                break
            if not call.protected and self.running < self.concurrency:
                idle = self.idle(only)
                if idle:
                    targets = idle
                    break
            if now - start > self.wait_s:
                raise NoReplica("no spare capacity for evaluation requests", code="eval_no_capacity")
            await asyncio.sleep(POLL_S)
        self.running += 1  # no await since the check: the loop runs nothing else in between
        self.waited_s += time.monotonic() - start
        return targets

    async def run(
        self,
        only: frozenset[str] | None,
        send: Callable[[frozenset[str] | None, Callable[[ReplicaLike], None]], Coroutine[Any, Any, T]],
    ) -> T:
        """Run `send(targets, placed)` until an attempt is not pre-empted; `send` posts to one of
        `targets` (None: any replica) and calls `placed(replica)` when the pool picks one."""
        call = EvalCall(arrived=time.monotonic())
        while True:
            targets = await self._admit(call, only)
            call.preempted = False
            task = call.task = asyncio.create_task(send(targets, lambda r: self._placed(call, r)))
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:  # our own caller went away
                task.cancel()
                raise
            finally:
                self.running -= 1
                self._leave(call)
            if not (call.preempted and task.cancelled()):
                return task.result()
            call.preemptions += 1

    def live_arrived(self, replica: ReplicaLike) -> None:
        """A live request goes to `replica`: its evaluation attempts yield."""
        for call in list(self._on.get(replica.url, ())):
            self._preempt(call)

    def _preempt(self, call: EvalCall) -> None:
        if call.protected or call.preempted or call.task is None or call.task.done():
            return
        call.preempted = True
        call.task.cancel()
        self.preemptions += 1
        if self.on_preempt is not None:
            self.on_preempt()

    def _placed(self, call: EvalCall, replica: ReplicaLike) -> None:
        self._leave(call)  # a failover moves it
        call.replica = replica.url
        self._on.setdefault(replica.url, set()).add(call)
        if self.yield_to_live and self.live_on(replica) > 0:
            self._preempt(call)  # a live request came first, between admission and now

    def _leave(self, call: EvalCall) -> None:
        if call.replica is not None:
            self._on.get(call.replica, set()).discard(call)
            call.replica = None
