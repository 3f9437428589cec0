"""The ASGI app served: chat completions straight to their handler, everything else to FastAPI."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from opentelemetry.trace import Tracer
from starlette.responses import Response

from gateway.errors import APIError, internal_error

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger(__name__)
CHAT_PATH = "/v1/chat/completions"


class HotPath:
    """The ASGI app served: chat completions go straight to their handler, skipping the
    middleware and routing layers (measured: a large share of the gateway's CPU per request);
    everything else, lifespan included, goes to the FastAPI app (`.app`)."""

    def __init__(self, app: FastAPI, tracer: Tracer | None = None) -> None:
        self.app = app
        self.services: Services = app.state.services
        self._chat: Callable[[Request], Awaitable[Response]] = app.state.chat_endpoint
        self._tracer = tracer

    async def _traced(self, request: Request) -> Response:
        assert self._tracer is not None
        with self._tracer.start_as_current_span("chat.completions") as span:
            response = await self._chat(request)
            h = response.headers
            span.set_attribute("rlgw.episode_id", h.get("x-episode-id", ""))
            span.set_attribute("rlgw.turn_id", h.get("x-turn-id", ""))
            span.set_attribute("rlgw.version", h.get("x-model-version", ""))
            span.set_attribute("http.status_code", response.status_code)
            return response

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            request = Request(scope, receive)
            response = await (self._traced(request) if self._tracer else self._chat(request))
        except APIError as exc:
            self.services.metrics.errors.labels(exc.type).inc()
            response = exc.response()
        except Exception:
            log.exception("unexpected error on POST %s", CHAT_PATH)
            self.services.metrics.errors.labels("server_error").inc()
            response = internal_error()
        await response(scope, receive, send)
