"""Building the gateway: `setup_gateway` is the one way, for the CLI, the tests and the benchmarks.

    setup_gateway(settings, recorder=…, bus=…, store=…)  ->  HotPath (the ASGI app to serve)
        .services   the Services the routes call (gateway/services.py)
        .app        the FastAPI app: lifespan, error handlers, every route group in ROUTES

A route group is a function `add_*_routes(app, services)` in a module of its own (an APIRouter
fits inside one: `app.include_router(router)`); a new group is registered by adding it to
ROUTES, and it names its routes' request bodies with `gateway.openapi.document_body`.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from opentelemetry.trace import Tracer

from gateway.app import add_api_routes
from gateway.auth import KeyStore
from gateway.config import GatewaySettings
from gateway.dashboard import add_dashboard_routes
from gateway.error_handlers import add_error_handlers
from gateway.eval_routes import add_eval_routes
from gateway.fleet import restore_versions, start_feeds
from gateway.hot_path import HotPath
from gateway.openapi import install_openapi
from gateway.pool import Pool
from gateway.services import EpisodeReader, Services
from ledger.bus import Bus
from ledger.recorder import Recorder
from ledger.tracing import setup_tracing

ROUTES: tuple[Callable[[FastAPI, Services], None], ...] = (
    add_api_routes,
    add_dashboard_routes,
    add_eval_routes,
)


def setup_gateway(
    settings: GatewaySettings,
    *,
    recorder: Recorder,
    bus: Bus | None = None,
    store: EpisodeReader | None = None,
    pool: Pool | None = None,
    keys: KeyStore | None = None,
    tracer: Tracer | None = None,
) -> HotPath:
    """The gateway's ASGI app over a recorder (and the bus its feeds follow, the store episodes
    are read from): the pool of `settings.gateway.upstreams` and the keys of `settings.keys_path`
    unless given; traced by `tracer`, else as `settings.telemetry` configures."""
    cfg = settings.gateway
    pool = pool or Pool(
        cfg.upstreams,
        connect_timeout_s=cfg.connect_timeout_s,
        request_timeout_s=cfg.request_timeout_s,
        health_interval_s=cfg.health_interval_s,
    )
    svc = Services(
        settings=settings,
        pool=pool,
        recorder=recorder,
        keys=keys or KeyStore(settings.keys_path),
        store=store,
        bus=bus,
    )
    return create_app(svc, tracer)


def create_app(svc: Services, tracer: Tracer | None = None) -> HotPath:
    """The ASGI app over built services (the FastAPI app is at `.app`)."""
    return HotPath(create_fastapi(svc), tracer or setup_tracing(svc.settings.telemetry, "rlgw-gateway"))


def create_fastapi(svc: Services) -> FastAPI:
    app = FastAPI(title="rl-gateway", version="0.1.0", lifespan=_lifespan(svc))
    app.state.services = svc
    add_error_handlers(app, svc.metrics)
    install_openapi(app)
    for add_routes in ROUTES:
        add_routes(app, svc)
    return app


def _lifespan(svc: Services) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.loop = asyncio.get_running_loop()
        restored = await asyncio.to_thread(restore_versions, svc)  # before serving: docs/versions.md
        await svc.pool.start()
        if svc.settings.versions.control:
            svc.controller.start()
        else:
            svc.controller.follow()  # full-weight placement, as the controlling gateway's events say
        feeds = start_feeds(svc, restored)
        gc.freeze()  # start-up objects (modules, app, config) leave full collections: ~25 ms each here
        try:
            yield
        finally:
            await svc.controller.stop()
            for feed in feeds:
                feed.close()
            await svc.pool.close()

    return lifespan
