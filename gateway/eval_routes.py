"""Admin routes of the eval gate (docs/versions.md, "The eval gate"):

    POST /admin/eval/chat/completions   a chat completion pinned to `version` (a body field):
                                        eval traffic, never recorded as a turn, never counted
                                        in a version's live figures, admitted on spare capacity
    GET  /admin/eval/prompts?n=N        the newest N held-out prompts (ledger/holdout.py)
    POST /admin/versions/{v}/eval       the evaluation's verdict: eval_passed | eval_failed

**Spare capacity only.** An evaluation request waits (`EvalAdmission`) until fewer than
`versions.eval_live_limit` live requests per healthy replica are in flight and fewer than
`versions.eval_concurrency` evaluation requests run; a live request never waits for one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from gateway.auth import require_admin
from gateway.bodies import parse_body, read_json
from gateway.chat import read_reply
from gateway.errors import InvalidRequest, NoReplica, UpstreamError, from_upstream
from gateway.pool import Pool
from gateway.services import Services
from ledger.holdout import heldout_prompts

MAX_PROMPTS = 1000
MAX_SCAN = 20_000  # recent episodes read at most to find them


class EvalAdmission:
    """Admits evaluation requests while the pool has spare capacity (module docstring)."""

    def __init__(self, pool: Pool, concurrency: int, live_limit: int, wait_s: float) -> None:
        self.pool, self.concurrency, self.live_limit, self.wait_s = pool, concurrency, live_limit, wait_s
        self.running = 0  # evaluation requests in flight (their replicas count them as outstanding)
        self.waited_s = 0.0  # total time evaluation requests waited for capacity

    def live(self) -> int:
        """Live requests in flight across the pool."""
        return max(0, sum(r.outstanding for r in self.pool.replicas) - self.running)

    def spare(self) -> bool:
        healthy = max(1, len(self.pool.healthy()))
        return self.running < self.concurrency and self.live() < self.live_limit * healthy

    async def __aenter__(self) -> None:
        start = time.monotonic()
        while not self.spare():
            if time.monotonic() - start > self.wait_s:
                raise NoReplica("no spare capacity for evaluation requests", code="eval_no_capacity")
            await asyncio.sleep(0.01)
        self.running += 1  # no await since the check: the loop runs nothing else in between
        self.waited_s += time.monotonic() - start

    async def __aexit__(self, *exc: object) -> None:
        self.running -= 1


class EvalResult(BaseModel):
    passed: bool
    """False: the version is never canaried (eval_failed)."""
    reason: str = ""
    report: dict[str, Any] = Field(default_factory=dict)
    """The evaluation's report (rewards/eval_report.py), kept in the event's figures."""


def add_eval_routes(app: FastAPI, svc: Services) -> None:
    cfg, reg, limit = svc.settings.versions, svc.versions, svc.settings.gateway.max_body_bytes
    admission = EvalAdmission(
        svc.pool, cfg.eval_concurrency, cfg.eval_live_limit, svc.settings.gateway.request_timeout_s
    )
    app.state.eval_admission = admission

    def admin(request: Request) -> None:
        require_admin(svc.sessions.authenticate(request))

    @app.post("/admin/eval/chat/completions")
    async def eval_completion(request: Request) -> Response:
        admin(request)
        body = await read_json(request, limit)
        if not isinstance(body, dict) or not isinstance(body.get("version"), str):
            raise InvalidRequest("'version' (the version to ask) is required", param="version")
        route = reg.eval_route(body.pop("version"))
        body = {**body, "model": svc.settings.gateway.model, "stream": False}
        svc.chat.validate(body)
        async with (
            admission,
            svc.pool.post(
                "/chat/completions",
                lambda replica: svc.chat.upstream_body(body, route, tokens=False),
                only=route.replicas,
            ) as (_, resp),
        ):
            raw = await read_reply(resp)
        if resp.status != 200:
            raise from_upstream(resp.status, raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"the replica's reply is not JSON: {exc}", code="upstream_error") from exc
        data["model"] = svc.settings.gateway.model
        headers = {"X-Model-Version": route.version}
        return Response(orjson.dumps(data), media_type="application/json", headers=headers)

    @app.get("/admin/eval/prompts")
    async def prompts(request: Request, n: int = 16) -> dict[str, Any]:
        admin(request)
        if not 0 < n <= MAX_PROMPTS:
            raise InvalidRequest(f"n must be within 1..{MAX_PROMPTS}", param="n")
        if svc.store is None:
            raise NoReplica("no store is configured for reads", code="store_unavailable")
        store, fraction = svc.store, svc.settings.ledger.holdout_fraction
        scan = min(MAX_SCAN, int(2 * n / fraction)) if fraction > 0 else 0  # twice the expected need
        episodes = await asyncio.to_thread(store.episodes, None, scan) if scan else []
        found = heldout_prompts(episodes, fraction, n)
        return {"fraction": fraction, "prompts": [p.model_dump(mode="json") for p in found]}

    @app.post("/admin/versions/{vid}/eval")
    async def record(vid: str, request: Request) -> dict[str, Any]:
        admin(request)
        if not cfg.control:
            raise InvalidRequest(
                "send the verdict to the controlling gateway", code="not_controlling_gateway"
            )
        result = parse_body(EvalResult, await read_json(request, limit))
        figures = {"verdict": "pass" if result.passed else "worse", **result.report}
        v = await asyncio.to_thread(reg.record_eval, vid, result.passed, result.reason, figures)
        await asyncio.to_thread(reg.next_canary)
        return {"version": v.id, "status": reg.get(vid).status}
