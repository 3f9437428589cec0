"""The gateway's HTTP app: thin routes over the chat, feedback and episode services."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from opentelemetry.trace import Tracer
from pydantic import BaseModel, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from gateway.admin import add_version_routes
from gateway.auth import KeyStore, Principal, require_admin
from gateway.chat import ChatService
from gateway.config import GatewaySettings
from gateway.controller import VersionController
from gateway.dashboard import add_dashboard_routes
from gateway.durability import made_durable, refuse_if_full
from gateway.episodes import CallContext, resolve_episode
from gateway.errors import (
    APIError,
    ClientGone,
    InvalidRequest,
    NoReplica,
    NotFound,
    PayloadTooLarge,
    error_response,
)
from gateway.explore import Exploration
from gateway.feeds import Feed, ScoreFeed, VersionFeed
from gateway.metrics import Metrics
from gateway.opsview import readiness, shows_addresses, update_metrics
from gateway.pool import Pool
from gateway.routing import Router
from gateway.scrub import scrub_feedback
from gateway.turns import TurnWriter
from gateway.versions import VersionRegistry
from ledger.bus import Bus
from ledger.recorder import Recorder
from ledger.records import TOPIC_FEEDBACK, Episode, Feedback, FeedbackValue
from ledger.tracing import setup_tracing

log = logging.getLogger(__name__)

CHAT_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "messages"],
                    "properties": {
                        "model": {"type": "string"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                        "stream": {"type": "boolean"},
                        "n": {"type": "integer"},
                        "max_tokens": {"type": "integer"},
                    },
                    "additionalProperties": True,
                }
            }
        },
    }
}


class EpisodeReader(Protocol):
    """What the gateway reads from the store (the ledger's store implements it)."""

    def episode(self, episode_id: str, tenant: str | None = None) -> Episode | None: ...


class FeedbackIn(BaseModel):
    episode_id: str | None = None
    turn_id: str | None = None
    name: str
    value: FeedbackValue
    done: bool = False

    @model_validator(mode="after")
    def _target(self) -> FeedbackIn:
        if not (self.episode_id or self.turn_id):
            raise ValueError("give 'episode_id' or 'turn_id'")
        return self


@dataclass
class Services:
    settings: GatewaySettings
    pool: Pool
    recorder: Recorder
    keys: KeyStore
    metrics: Metrics = field(default_factory=Metrics)
    store: EpisodeReader | None = None
    bus: Bus | None = None  # where live scores are read from (for canary decisions)
    loop: asyncio.AbstractEventLoop | None = None  # the server's loop, once it runs
    versions: VersionRegistry = field(init=False)
    controller: VersionController = field(init=False)
    turns: TurnWriter = field(init=False)
    chat: ChatService = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.settings.gateway
        self.versions = VersionRegistry(
            self.settings.versions, self.recorder, lambda: cfg.base_model or self.pool.base_model()
        )
        self.controller = VersionController(self.versions, self.pool)
        router: Router = self.versions
        self.turns = TurnWriter(self.recorder, cfg.model, scrub_pii=self.settings.ledger.scrub_pii)
        self.chat = ChatService(
            self.pool,
            router,
            self.turns,
            self.metrics,
            max_n=cfg.max_n,
            max_tokens=cfg.max_tokens_limit,
            on_request=self.versions.observe_request,
            explore=Exploration(cfg.exploration_share, cfg.exploration_k, cfg.exploration_tasks),
        )


WRITABLE_DEPTH = 250  # orjson and pydantic write ~255 levels of nesting


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: bounded in size (Content-Length or chunked), and in nesting so that
    every accepted body can be forwarded and recorded; any content type (curl -d sends a form's)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes", code="body_too_large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes", code="body_too_large")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ClientGone("the client went away before its request body arrived") from exc
    data = b"".join(chunks)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if len(data) > 2 * WRITABLE_DEPTH:  # only a body this long can nest this deep
        try:  # the parser takes 1024 levels, but records are written with ~255 at most
            orjson.dumps([[value]])  # records hold the body up to two levels down
        except TypeError as exc:
            raise InvalidRequest(
                f"the body nests deeper than {WRITABLE_DEPTH} levels", code="too_deeply_nested"
            ) from exc
    return value


def _validation_message(exc: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return f"{first.get('msg', 'invalid request')}" + (f" (at {loc})" if loc else ""), loc


def count_error(metrics: Metrics, exc: APIError) -> None:
    """A client that went away is counted as such, not as an error of ours."""
    if isinstance(exc, ClientGone):
        metrics.disconnects.labels("request").inc()
    else:
        metrics.errors.labels(exc.type).inc()


class HotPath:
    """The ASGI app served: chat completions go straight to their handler, skipping the
    middleware and routing layers (measured: a large share of the gateway's CPU per request);
    everything else, lifespan included, goes to the FastAPI app."""

    def __init__(self, app: FastAPI, tracer: Tracer | None = None) -> None:
        self.app = app
        self.services: Services = app.state.services
        self._chat = app.state.chat_endpoint
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
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            request = Request(scope, receive)
            response = await (self._traced(request) if self._tracer else self._chat(request))
        except APIError as exc:
            count_error(self.services.metrics, exc)
            response = exc.response()
        except Exception:
            log.exception("unexpected error on POST /v1/chat/completions")
            self.services.metrics.errors.labels("server_error").inc()
            body = {
                "error": {"message": "internal error", "type": "server_error", "param": None, "code": None}
            }
            response = error_response(500, body)
        await response(scope, receive, send)


def _document_chat_route(app: FastAPI) -> None:
    """Add the plain chat route to the OpenAPI schema FastAPI generates for the others."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            op = {
                "summary": "Chat completions (OpenAI-compatible)",
                "operationId": "chat_completions",
                **CHAT_SCHEMA,
            }
            op["responses"] = {"200": {"description": "A chat completion, or an SSE stream of chunks"}}
            schema["paths"]["/v1/chat/completions"] = {"post": op}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(svc: Services, tracer: Tracer | None = None) -> HotPath:
    """The gateway's ASGI app (the FastAPI app is at `.app`); traced by `tracer`, else as
    `telemetry` configures."""
    return HotPath(create_fastapi(svc), tracer or setup_tracing(svc.settings.telemetry, "rlgw-gateway"))


def create_fastapi(svc: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        svc.loop = asyncio.get_running_loop()
        await svc.pool.start()
        control = svc.settings.versions.control
        if control:
            svc.controller.start()
        feed: Feed | None = None
        if svc.bus is not None:
            kind = ScoreFeed if control else VersionFeed
            feed = kind(svc.bus, svc.versions, svc.settings.ledger.topic_prefix).start()
        gc.freeze()  # start-up objects (modules, app, config) leave full collections: ~25 ms each here
        try:
            yield
        finally:
            await svc.controller.stop()
            if feed is not None:
                feed.close()
            await svc.pool.close()

    app = FastAPI(title="rl-gateway", version="0.1.0", lifespan=lifespan)
    app.state.services = svc
    limit = svc.settings.gateway.max_body_bytes

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        count_error(svc.metrics, exc)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        message, param = _validation_message(exc)
        return InvalidRequest(message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown routes (404) and methods (405), in OpenAI's shape like every other error."""
        err: APIError = (
            NotFound(str(exc.detail)) if exc.status_code == 404 else InvalidRequest(str(exc.detail))
        )
        err.status = exc.status_code
        return err.response(dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        svc.metrics.errors.labels("server_error").inc()
        body = {"error": {"message": "internal error", "type": "server_error", "param": None, "code": None}}
        return error_response(500, body)

    def auth(request: Request) -> Principal:
        return svc.keys.authenticate(request.headers.get("authorization"))

    async def chat_completions(request: Request) -> Response:
        principal = auth(request)
        body = await read_json(request, limit)
        ref = resolve_episode(request.headers, body if isinstance(body, dict) else {})
        return await svc.chat.complete(body, CallContext(principal.tenant, ref))

    add_version_routes(app, svc.controller, auth, lambda request: read_json(request, limit))
    app.router.add_route("/v1/chat/completions", chat_completions, methods=["POST"])
    _document_chat_route(app)
    app.state.chat_endpoint = chat_completions

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
        try:
            fb = FeedbackIn.model_validate(raw)
        except ValidationError as exc:
            message, param = _validation_message(exc)
            raise InvalidRequest(message, param=param) from exc
        episode_id = fb.episode_id
        if fb.turn_id:
            known = svc.turns.index.get(fb.turn_id)
            if known is None and episode_id is None:
                raise NotFound(f"unknown turn {fb.turn_id}; give its episode_id too", param="turn_id")
            if known is not None:
                if known[1] != principal.tenant:
                    raise NotFound(f"unknown turn {fb.turn_id}", param="turn_id")
                episode_id = known[0]
        assert episode_id is not None
        record = Feedback(
            episode_id=episode_id,
            turn_id=fb.turn_id,
            name=fb.name,
            value=fb.value,
            done=fb.done,
            tenant=principal.tenant,
        )
        refuse_if_full(svc.recorder)
        svc.recorder.record(
            TOPIC_FEEDBACK, scrub_feedback(record) if svc.settings.ledger.scrub_pii else record
        )
        await made_durable(svc.recorder)
        return {"id": record.id, "episode_id": episode_id, "status": "accepted"}

    @app.post("/v1/episodes/{episode_id}/end")
    async def end_episode(episode_id: str, request: Request) -> dict[str, Any]:
        principal = auth(request)
        refuse_if_full(svc.recorder)
        svc.turns.end_episode(episode_id, principal.tenant, "client")
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

    add_dashboard_routes(app, svc)
    return app
