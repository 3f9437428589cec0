"""Admin routes for model versions: register, list, promote, roll back, pin."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError

from gateway.adapters import AdapterError
from gateway.auth import Principal, require_admin
from gateway.controller import VersionController
from gateway.errors import InvalidRequest, UpstreamError
from gateway.openapi import document_body
from gateway.version_state import Version
from ledger.published import PublishedVersion


class ActionIn(BaseModel):
    reason: str = "operator"


def add_version_routes(app: FastAPI, controller: VersionController, auth: Any, read_json: Any) -> None:
    reg = controller.registry

    async def admin(request: Request, changes: bool = False) -> Principal:
        principal: Principal = auth(request)
        require_admin(principal)
        if changes and not reg.cfg.control:
            raise InvalidRequest(
                "this gateway follows the controlling gateway's versions: send changes there",
                code="not_controlling_gateway",
            )
        return principal

    async def reason_of(request: Request) -> str:
        if not (await request.body()).strip():
            return "operator"
        try:
            return ActionIn.model_validate(await read_json(request)).reason
        except ValidationError as exc:
            raise InvalidRequest(str(exc.errors()[0]["msg"])) from exc

    async def load_before_routing(v: Version) -> None:
        try:
            await controller.ensure_loaded(v)
        except AdapterError as exc:
            raise UpstreamError(str(exc), code="adapter_load_failed") from exc

    @app.post("/admin/versions")
    async def register(request: Request) -> dict[str, Any]:
        await admin(request, changes=True)
        try:
            body = PublishedVersion.model_validate(await read_json(request))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidRequest(f"{first['msg']} (at {'.'.join(map(str, first['loc']))})") from exc
        try:
            v = await controller.register(body)
        except AdapterError as exc:
            raise UpstreamError(str(exc), code="adapter_load_failed") from exc
        return {"version": v.id, "status": v.status, "replicas": v.replicas}

    document_body(app, "/admin/versions", "post", PublishedVersion)

    @app.get("/admin/versions")
    async def listing(request: Request) -> dict[str, Any]:
        await admin(request)
        judges = sorted(reg.judges.active())  # judge drift alarms (gateway/judge_alarms.py)
        return {
            "serving": reg.serving,
            "canary": reg.canary,
            "versions": reg.listing(),
            "judge_alarms": judges,
        }

    @app.get("/admin/versions/events")
    async def events(request: Request) -> dict[str, Any]:
        await admin(request)
        return {"events": [e.model_dump(mode="json") for e in reg.events[-500:]]}

    @app.post("/admin/versions/{vid}/promote")
    async def promote(vid: str, request: Request) -> dict[str, Any]:
        await admin(request, changes=True)
        reason = await reason_of(request)
        await load_before_routing(reg.promotable(vid))
        v = await asyncio.to_thread(reg.promote, vid, reason)
        return {"version": v.id, "status": v.status}

    async def roll_back(vid: str | None, request: Request) -> dict[str, Any]:
        await admin(request, changes=True)
        reason = await reason_of(request)
        await load_before_routing(reg.rollback_target(vid))
        v = await asyncio.to_thread(reg.rollback, vid, reason)
        return {"version": v.id, "status": v.status, "serving": reg.serving}

    @app.post("/admin/versions/{vid}/rollback")
    async def rollback(vid: str, request: Request) -> dict[str, Any]:
        return await roll_back(vid, request)

    @app.post("/admin/rollback")
    async def rollback_current(request: Request) -> dict[str, Any]:
        """Roll back the canary, or the serving version when no canary runs."""
        return await roll_back(None, request)

    @app.post("/admin/versions/{vid}/pin")
    async def pin(vid: str, request: Request) -> dict[str, Any]:
        await admin(request, changes=True)
        return {"version": vid, "pinned": (await asyncio.to_thread(reg.pin, vid, True)).pinned}

    @app.post("/admin/versions/{vid}/unpin")
    async def unpin(vid: str, request: Request) -> dict[str, Any]:
        await admin(request, changes=True)
        return {"version": vid, "pinned": (await asyncio.to_thread(reg.pin, vid, False)).pinned}
