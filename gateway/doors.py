"""How a served chat completion leaves the gateway: the seam between one serving call and the
API shape the client spoke (docs/front-doors.md).

Every front door (chat completions, Responses, Anthropic Messages) translates its request into
a chat-completions body and hands it to `ChatService.complete` with a `Door`: the service routes,
forwards, taps and records exactly as for chat, then asks the door to render the reply, the
stream and the errors. `Door` itself renders chat completions unchanged; the other doors
subclass it. A door is made per request, so it may carry what the request said.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from gateway.errors import APIError, error_sse


class StreamRender:
    """Turns the (already trimmed) chat chunks of one stream into the bytes the client reads."""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def done(self) -> bytes:
        """The upstream finished the stream."""
        return b"data: [DONE]\n\n"

    def fail(self, err: APIError) -> bytes:
        """The stream broke after it began (the status line is gone)."""
        return error_sse(err)


class Door:
    """Chat completions' own shape; other doors override what they render differently."""

    passthrough = True  # SSE lines that are not data (comments, pings) are relayed as they are

    def reply(self, data: dict[str, Any], headers: dict[str, str]) -> Response:
        return Response(orjson.dumps(data), media_type="application/json", headers=headers)

    def error(self, err: APIError, headers: dict[str, str] | None = None) -> Response:
        return err.response(headers)

    def stream(self) -> StreamRender:
        return StreamRender()


CHAT = Door()
