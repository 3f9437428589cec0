"""The ASGI app served: the model endpoints straight to their handlers, everything else to FastAPI."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from opentelemetry.trace import Tracer
from starlette.responses import Response

from gateway.errors import APIError, internal_error
from gateway.sessions import strip_episode_prefix

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger(__name__)
CHAT_PATH = "/v1/chat/completions"
Endpoint = Callable[[Request], Awaitable[Response]]


class HotPath:
    """The ASGI app served: chat completions and the other front doors (docs/front-doors.md) go
    straight to their handlers, skipping the middleware and routing layers (measured: a large
    share of the gateway's CPU per request); everything else, lifespan included, goes to the
    FastAPI app (`.app`). A path under /e/{episode_id}/ is served with that episode bound
    (gateway/sessions.py)."""

    def __init__(self, app: FastAPI, tracer: Tracer | None = None) -> None:
        self.app = app
        self.services: Services = app.state.services
        self._fast: dict[str, Endpoint] = app.state.fast_endpoints  # POST path -> handler
        self._tracer = tracer

    async def _traced(self, endpoint: Endpoint, request: Request) -> Response:
        assert self._tracer is not None
        name = "chat.completions" if request.url.path == CHAT_PATH else request.url.path[4:]
        with self._tracer.start_as_current_span(name) as span:
            response = await endpoint(request)
            h = response.headers
            span.set_attribute("rlgw.episode_id", h.get("x-episode-id", ""))
            span.set_attribute("rlgw.turn_id", h.get("x-turn-id", ""))
            span.set_attribute("rlgw.version", h.get("x-model-version", ""))
            span.set_attribute("http.status_code", response.status_code)
            return response

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/e/"):
            scope = strip_episode_prefix(scope)
        endpoint = self._fast.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            request = Request(scope, receive)
            response = await (self._traced(endpoint, request) if self._tracer else endpoint(request))
        except APIError as exc:
            self.services.metrics.api_error(exc)
            response = exc.response()
        except Exception:
            log.exception("unexpected error on POST %s", scope["path"])
            self.services.metrics.errors.labels("server_error").inc()
            response = internal_error()
        await response(scope, receive, send)
