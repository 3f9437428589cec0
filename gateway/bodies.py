"""Request bodies: read bounded in size and nesting, parsed as JSON, checked against a model.

Every body the gateway accepts can be forwarded and recorded: orjson parses 1024 levels of
nesting but writes ~255, so a deeper body is refused here rather than jamming the recorder.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from gateway.errors import ClientGone, InvalidRequest, PayloadTooLarge

WRITABLE_DEPTH = 250  # orjson and pydantic write ~255 levels of nesting
Body = TypeVar("Body", bound=BaseModel)


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
    except ClientDisconnect as exc:  # counted as such, never logged as our error
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


def validation_message(exc: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    """The first problem of a failed validation as (message, param): param is the field's dotted path."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return f"{first.get('msg', 'invalid request')}" + (f" (at {loc})" if loc else ""), loc


def parse_body(model: type[Body], raw: Any) -> Body:
    """`raw` (parsed JSON) as `model`, or a 400 naming the first field at fault."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise InvalidRequest(message, param=param) from exc
