"""The evaluation's seam to the gateway: one small protocol, the HTTP client and its fake.

    complete(version, request)   a chat completion pinned to `version`, as eval traffic: the
                                 gateway does not record it and does not count it in any
                                 version's live figures, and admits it on spare capacity only
                                 (POST /admin/eval/chat/completions, docs/versions.md)
    prompts(n)                   up to n held-out prompts from the gateway's store
                                 (GET /admin/eval/prompts, ledger/holdout.py)
    listing()                    the version listing (GET /admin/versions)
    record(version, result)      the gate's verdict for a version (POST /admin/versions/{v}/eval)

Transient answers (connection errors, timeouts, 429, 502, 503, 504) are tried again with
backoff; anything else raises `EvalRequestError` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ledger.holdout import EvalPrompt

TRANSIENT_STATUS = {429, 502, 503, 504}


class EvalRequestError(RuntimeError):
    """The gateway refused an evaluation call, or stayed unreachable through every retry."""


class EvalClient(Protocol):
    async def complete(self, version: str, request: dict[str, Any]) -> dict[str, Any]: ...

    async def prompts(self, n: int) -> list[EvalPrompt]: ...

    async def listing(self) -> dict[str, Any]: ...

    async def record(self, version: str, result: dict[str, Any]) -> None: ...


def gateway_root(url: str) -> str:
    """`http://host:port` from the gateway's root or its `/v1` URL."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class GatewayEvalClient:
    def __init__(
        self,
        gateway_url: str,
        admin_key: str | None = None,
        *,
        timeout_s: float = 300.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        self.http = httpx.AsyncClient(
            base_url=gateway_root(gateway_url), headers=headers, timeout=timeout_s, transport=transport
        )
        self.retries, self.backoff_s = max(1, retries), backoff_s

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        last = ""
        for attempt in range(self.retries):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = await self.http.request(method, path, **kw)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code < 300:
                return resp.json()
            last = f"HTTP {resp.status_code}: {resp.text[:300]}"
            if resp.status_code not in TRANSIENT_STATUS:
                break
        raise EvalRequestError(f"{method} {path}: {last}")

    async def complete(self, version: str, request: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = await self._call(
            "POST", "/admin/eval/chat/completions", json={**request, "version": version}
        )
        return reply

    async def prompts(self, n: int) -> list[EvalPrompt]:
        body = await self._call("GET", "/admin/eval/prompts", params={"n": n})
        return [EvalPrompt.model_validate(p) for p in body["prompts"]]

    async def listing(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._call("GET", "/admin/versions")
        return body

    async def record(self, version: str, result: dict[str, Any]) -> None:
        await self._call("POST", f"/admin/versions/{version}/eval", json=result)

    async def close(self) -> None:
        await self.http.aclose()


@dataclass
class FakeEvalClient:
    """In memory: `answer(version, request)` gives each reply's text (None: that call fails)."""

    answer: Callable[[str, dict[str, Any]], str | None]
    held_out: list[EvalPrompt] = field(default_factory=list)
    versions: dict[str, Any] = field(default_factory=lambda: {"serving": "base", "versions": []})
    recorded: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def complete(self, version: str, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((version, request))
        text = self.answer(version, request)
        if text is None:
            raise EvalRequestError(f"fake: no answer from {version}")
        message = {"role": "assistant", "content": text}
        return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    async def prompts(self, n: int) -> list[EvalPrompt]:
        return self.held_out[:n]

    async def listing(self) -> dict[str, Any]:
        return self.versions

    async def record(self, version: str, result: dict[str, Any]) -> None:
        self.recorded.append((version, result))

    async def close(self) -> None:
        return None
