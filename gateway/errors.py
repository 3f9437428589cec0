"""Every error the gateway returns, in OpenAI's shape, with the right status.

    APIError                   {"error": {"message", "type", "param", "code"}}
     ├── InvalidRequest        400 invalid_request_error (malformed JSON, bad fields)
     ├── Unauthorized          401 authentication_error
     ├── Forbidden             403 permission_error (tenant key on an admin route)
     ├── NotFound              404 not_found_error (unknown model, episode)
     ├── PayloadTooLarge       413 invalid_request_error
     ├── ClientGone            499 client_disconnected (counted, never logged as an error)
     ├── UpstreamError         502 upstream_error (a replica failed before any byte was sent)
     ├── NoReplica             503 service_unavailable (no healthy replica)
     ├── LedgerUnavailable     503 service_unavailable (the ledger cannot keep records now)
     └── UpstreamTimeout       504 timeout

Handlers raise these; one exception handler renders them. Anything else is caught at the
boundary, logged with its traceback, and rendered as a 500 without one.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class APIError(Exception):
    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None) -> Response:
        return error_response(self.status, self.body(), headers)


class InvalidRequest(APIError):
    pass


class Unauthorized(APIError):
    status, type = 401, "authentication_error"


class Forbidden(APIError):
    status, type = 403, "permission_error"


class NotFound(APIError):
    status, type = 404, "not_found_error"


class PayloadTooLarge(APIError):
    status = 413


class ClientGone(APIError):
    """The client closed its connection before its request arrived: nobody reads the reply."""

    status, type = 499, "client_disconnected"


class UpstreamError(APIError):
    status, type = 502, "upstream_error"


class NoReplica(APIError):
    status, type = 503, "service_unavailable"


class LedgerUnavailable(APIError):
    """Records cannot be kept now (the disk refuses them and memory is full, or a durable ack
    timed out): refusing the request beats acknowledging what could be lost."""

    status, type = 503, "service_unavailable"


class UpstreamTimeout(APIError):
    status, type = 504, "timeout"


def error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def internal_error() -> Response:
    """The 500 of an unexpected exception: no traceback leaves the gateway."""
    body = {"error": {"message": "internal error", "type": "server_error", "param": None, "code": None}}
    return error_response(500, body)


def error_sse(err: APIError) -> bytes:
    """An error raised after a stream began: sent as one last SSE event (the status is gone)."""
    return b"data: " + orjson.dumps(err.body()) + b"\n\n"


def from_upstream(status: int, raw: bytes) -> APIError:
    """A replica's 4xx passes through as the same status; anything else is a 502."""
    try:
        data = orjson.loads(raw)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else str(data)[:500]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        message = raw[:500].decode(errors="replace")
    if 400 <= status < 500 and status != 408:
        err: APIError = NotFound(message) if status == 404 else InvalidRequest(message)
        err.status = status
    elif status in (408, 504):
        err = UpstreamTimeout(f"upstream timed out: {message}")
    else:
        err = UpstreamError(f"upstream answered {status}: {message}", code="upstream_error")
    return err
