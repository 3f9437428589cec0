"""The gateway's public HTTP routes: thin handlers that read the request, call a service, answer.

Bodies are read by gateway/bodies.py and checked against their models (chat: gateway/
chat_request.py, feedback: gateway/feedback.py); errors render in OpenAI's shape
(gateway/error_handlers.py). The app is assembled in gateway/wiring.py.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from gateway.admin import add_version_routes
from gateway.auth import Principal, require_admin
from gateway.bodies import parse_body, read_json
from gateway.chat_request import ChatCompletionRequest
from gateway.durability import made_durable, refuse_if_full
from gateway.episodes import CallContext, resolve_episode
from gateway.errors import NoReplica, NotFound
from gateway.feedback import FeedbackIn
from gateway.hot_path import CHAT_PATH
from gateway.messages import messages_router
from gateway.openapi import document_body
from gateway.opsview import readiness, shows_addresses, update_metrics
from gateway.responses import responses_router
from gateway.services import Services
from gateway.sessions import sessions_router


def add_api_routes(app: FastAPI, svc: Services) -> None:
    limit = svc.settings.gateway.max_body_bytes

    def auth(request: Request) -> Principal:
        return svc.sessions.authenticate(request)  # tenant or session key, /e/{episode}/ path

    async def chat_completions(request: Request) -> Response:
        principal = auth(request)
        body = await read_json(request, limit)
        ref = resolve_episode(request.headers, body if isinstance(body, dict) else {}, principal)
        return await svc.chat.complete(body, CallContext(principal.tenant, ref))

    add_version_routes(app, svc.controller, auth, lambda request: read_json(request, limit))
    app.add_api_route(
        CHAT_PATH,
        chat_completions,
        methods=["POST"],
        summary="Chat completions (OpenAI-compatible)",
        operation_id="chat_completions",
        responses={200: {"description": "A chat completion, or an SSE stream of chunks"}},
    )
    doors = [  # the Responses API and Anthropic Messages (docs/front-doors.md)
        responses_router(svc.chat, svc.conversations, auth, lambda r: read_json(r, limit)),
        messages_router(svc.chat, auth, lambda r: read_json(r, limit)),
    ]
    for router in [*doors, sessions_router(svc.sessions, svc.turns, lambda r: read_json(r, limit))]:
        app.include_router(router)
    app.state.fast_endpoints = {CHAT_PATH: chat_completions} | {  # served by gateway/hot_path.py
        r.path: r.endpoint for d in doors for r in d.routes if isinstance(r, APIRoute) and "POST" in r.methods
    }
    document_body(app, CHAT_PATH, "post", ChatCompletionRequest)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        auth(request)
        entry = {
            "id": svc.settings.gateway.model,
            "object": "model",
            "owned_by": "rl-gateway",
            "versions": svc.versions.describe(),
        }
        return {"object": "list", "data": [entry]}

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        principal = auth(request)
        raw = await read_json(request, limit)
        if (
            principal.episode_id
            and isinstance(raw, dict)
            and not (raw.get("episode_id") or raw.get("turn_id"))
        ):
            raw["episode_id"] = principal.episode_id  # a session key's (or /e/ path's) episode
        fb = parse_body(FeedbackIn, raw)
        refuse_if_full(svc.recorder)
        record = await svc.feedback.give(fb, principal.tenant)
        await made_durable(svc.recorder)
        return {"id": record.id, "episode_id": record.episode_id, "status": "accepted"}

    document_body(app, "/v1/feedback", "post", FeedbackIn)

    @app.post("/v1/episodes/{episode_id}/end")
    async def end_episode(episode_id: str, request: Request) -> dict[str, Any]:
        principal = auth(request)
        refuse_if_full(svc.recorder)
        svc.turns.end_episode(episode_id, principal.tenant, "client")
        svc.sessions.end(principal.tenant, episode_id)
        await made_durable(svc.recorder)
        return {"episode_id": episode_id, "status": "ended"}

    def read_episode(episode_id: str, tenant: str | None) -> dict[str, Any]:
        if svc.store is None:
            raise NoReplica("no store is configured for reads", code="store_unavailable")
        episode = svc.store.episode(episode_id, tenant)
        if episode is None:
            raise NotFound(f"episode {episode_id} not found", param="episode_id")
        return episode.model_dump(mode="json")

    @app.get("/v1/episodes/{episode_id}")
    async def tenant_episode(episode_id: str, request: Request) -> dict[str, Any]:
        return read_episode(episode_id, auth(request).tenant)

    @app.get("/admin/episodes/{episode_id}")
    async def admin_episode(episode_id: str, request: Request, tenant: str | None = None) -> dict[str, Any]:
        """Any tenant's episode; clients choose episode ids, so name the tenant where several
        use one (without it: the tenant that used it first)."""
        require_admin(auth(request))
        return read_episode(episode_id, tenant)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        expose = svc.settings.gateway.expose_upstreams
        addresses = shows_addresses(svc.keys, request.headers.get("authorization"), expose)
        ready, body = readiness(svc.pool, svc.recorder, addresses)
        return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        update_metrics(svc.metrics, svc.pool, svc.recorder, svc.settings.gateway.expose_upstreams)
        return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")
