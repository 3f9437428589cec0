"""The operator dashboard: `GET /dashboard` (a page) over `GET /admin/dashboard/data` (JSON).

The page and its assets ship in `gateway/static/` and load nothing from elsewhere (the
Content-Security-Policy allows only this origin). It polls the data route every 2 s with the
admin key as a Bearer header, and its promote / rollback / pin buttons call the admin API.

Auth: the data route and every action need an admin key (open when no keys are configured).
The page itself holds no figures; it checks a key when one is presented (`Authorization`
header or `?key=`), so a tenant key is refused there too, and otherwise asks for one.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from gateway.auth import require_admin
from gateway.dashboard_data import StoreFigures, snapshot
from gateway.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from gateway.services import Services

ASSETS = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _asset(name: str) -> bytes:
    return resources.files("gateway").joinpath("static", name).read_bytes()


def _bounded(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be an integer in [{low}, {high}]", param=name)
    return int(raw)


def add_dashboard_routes(app: FastAPI, svc: Services) -> None:
    assets = {name: _asset(name) for name in ASSETS}
    figures = StoreFigures(svc.store) if svc.store is not None else None

    def admin(authorization: str | None) -> None:
        require_admin(svc.keys.authenticate(authorization))

    @app.get("/dashboard", include_in_schema=False)
    async def page(request: Request) -> Response:
        presented = request.headers.get("authorization")
        if presented is None and request.query_params.get("key"):
            presented = "Bearer " + request.query_params["key"]
        if presented is not None:
            admin(presented)
        return Response(assets["dashboard.html"], media_type=ASSETS["dashboard.html"], headers=HEADERS)

    @app.get("/dashboard/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in ASSETS or name.endswith(".html"):
            raise NotFound(f"no dashboard asset {name}")
        return Response(assets[name], media_type=ASSETS[name], headers=HEADERS)

    @app.get("/admin/dashboard/data")
    def data(request: Request) -> dict[str, Any]:  # sync: store reads run in the threadpool
        admin(request.headers.get("authorization"))
        window_s = _bounded(request, "window_s", 900, 60, 7 * 86400)
        buckets = _bounded(request, "buckets", 30, 2, 240)
        return snapshot(
            svc.versions,
            svc.recorder,
            figures,
            window_s=window_s,
            bucket_s=max(1, -(-window_s // buckets)),
        )
