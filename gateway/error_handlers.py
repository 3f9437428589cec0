"""The FastAPI app's exception handlers: every error leaves in OpenAI's shape (gateway/errors.py)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.bodies import validation_message
from gateway.errors import APIError, InvalidRequest, NotFound, internal_error
from gateway.metrics import Metrics

log = logging.getLogger(__name__)


def add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        metrics.api_error(exc)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        message, param = validation_message(exc)
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
        metrics.errors.labels("server_error").inc()
        return internal_error()
