"""Admin routes of the eval gate (docs/versions.md, "The eval gate"):

    POST /admin/eval/chat/completions   a chat completion pinned to `version` (a body field):
                                        eval traffic, never recorded as a turn, never counted
                                        in a version's live figures, admitted on spare capacity
    GET  /admin/eval/prompts?n=N        the newest N held-out prompts (ledger/holdout.py)
    POST /admin/versions/{v}/eval       the evaluation's verdict: eval_passed | eval_failed

**Spare capacity only, yielding to live traffic** (gateway/eval_admission.py): an evaluation
request waits for spare capacity, a live request never waits for one, and with
`versions.eval_yield` an evaluation request in flight on a replica that a live request is
routed to is cancelled upstream and sent again once that replica is idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from gateway.auth import require_admin
from gateway.bodies import parse_body, read_json
from gateway.chat import read_reply
from gateway.errors import InvalidRequest, NoReplica, UpstreamError, from_upstream
from gateway.eval_admission import EvalAdmission
from gateway.services import Services
from ledger.holdout import heldout_prompts

MAX_PROMPTS = 1000
MAX_SCAN = 20_000  # recent episodes read at most to find them


class EvalResult(BaseModel):
    passed: bool
    """False: the version is never canaried (eval_failed)."""
    reason: str = ""
    report: dict[str, Any] = Field(default_factory=dict)
    """The evaluation's report (rewards/eval_report.py), kept in the event's figures."""


def add_eval_routes(app: FastAPI, svc: Services) -> None:
    cfg, reg, limit = svc.settings.versions, svc.versions, svc.settings.gateway.max_body_bytes
    admission = EvalAdmission(
        svc.pool,
        cfg.eval_concurrency,
        cfg.eval_live_limit,
        svc.settings.gateway.request_timeout_s,
        yield_to_live=cfg.eval_yield,
        max_preemptions=cfg.eval_max_preemptions,
        deadline_s=cfg.eval_yield_deadline_s,
        on_preempt=svc.metrics.eval_preemptions.inc,
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

        async def send(targets: frozenset[str] | None, placed: Callable[[Any], None]) -> tuple[int, bytes]:
            def for_replica(replica: Any) -> bytes:
                placed(replica)
                return svc.chat.upstream_body(body, route, tokens=False)

            async with svc.pool.post("/chat/completions", for_replica, only=targets, background=True) as (
                _,
                resp,
            ):
                return resp.status, await read_reply(resp)

        status, raw = await admission.run(route.replicas, send)
        if status != 200:
            raise from_upstream(status, raw)
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
