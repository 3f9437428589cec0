"""Episode keys for harnesses that cannot set a header per task: session keys and path prefixes.

A session key (`POST /v1/sessions`, `rlgw sessions create`) binds a new episode (and a task) to
a key the harness uses as its API key, Bearer or `x-api-key`. It is signed, not stored: its HMAC
key is the SHA-256 of the tenant key that created it, which every gateway sharing the keys file
holds, so any gateway accepts it, and removing the tenant key revokes its sessions. A base URL
`/e/{episode_id}/v1` binds the episode by path instead. Both are the caller's tenant's episodes.
Ending a session ends its episode; this gateway then refuses its key (others until it expires).

    rlgw-s.<key id>.<payload: base64url JSON {e: episode, t: task, x: expiry}>.<signature>
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import replace
from typing import Any

import orjson
from fastapi import APIRouter, Request

from gateway.auth import OPEN, KeyStore, Principal
from gateway.errors import Forbidden, InvalidRequest, Unauthorized
from gateway.turns import TurnWriter
from ledger.ids import new_id

SESSION_PREFIX = "rlgw-s."
PATH_EPISODE = "rlgw.path_episode"  # the ASGI scope entry an /e/{episode_id}/ prefix sets
OPEN_KID = "open"
DEFAULT_TTL_S = 24 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def strip_episode_prefix(scope: Any) -> Any:
    """`/e/{episode_id}/v1/...` → `/v1/...`, with the episode kept in the scope."""
    _, _, episode_id, rest = (scope["path"] + "/").split("/", 3)
    path = "/" + rest.rstrip("/") if rest.rstrip("/") else "/"
    return {**scope, "path": path, "raw_path": path.encode(), PATH_EPISODE: episode_id}


class Sessions:
    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._ended: set[tuple[str, str]] = set()  # (tenant, episode id) ended here

    def _secret(self, kid: str) -> tuple[bytes, Principal] | None:
        if kid == OPEN_KID:
            return (hashlib.sha256(b"rlgw-open").digest(), OPEN) if self.keys.open else None
        found = self.keys.by_digest_prefix(kid)
        return None if found is None else (bytes.fromhex(found[0]), found[1])

    def create(self, key: str | None, episode_id: str, task: str | None, ttl_s: float) -> tuple[str, float]:
        """A session key for `episode_id`, signed with the tenant key `key` (None: open mode)."""
        kid = OPEN_KID if self.keys.open or key is None else hashlib.sha256(key.encode()).hexdigest()[:16]
        found = self._secret(kid)
        assert found is not None
        expires = time.time() + ttl_s
        payload = _b64(orjson.dumps({"e": episode_id, "t": task, "x": expires}))
        sig = _b64(hmac.new(found[0], f"{kid}.{payload}".encode(), "sha256").digest()[:24])
        return f"{SESSION_PREFIX}{kid}.{payload}.{sig}", expires

    def verify(self, token: str) -> Principal:
        try:
            kid, payload, sig = token[len(SESSION_PREFIX) :].split(".")
            found = self._secret(kid)
            want = found and hmac.new(found[0], f"{kid}.{payload}".encode(), "sha256").digest()[:24]
            if not want or not hmac.compare_digest(want, _unb64(sig)):
                raise ValueError("bad signature")
            claims = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise Unauthorized("invalid session key", code="invalid_api_key") from exc
        assert found is not None
        tenant = found[1].tenant
        if claims["x"] < time.time():
            raise Unauthorized("this session key has expired", code="session_expired")
        if (tenant, claims["e"]) in self._ended:
            raise Unauthorized("this session has ended", code="session_ended")
        return Principal(tenant, False, claims["e"], claims.get("t"))

    def authenticate(self, request: Request) -> Principal:
        """The caller: a tenant key or a session key (Bearer or x-api-key), bound to the episode
        of its session or of its /e/{episode_id}/ path."""
        header = request.headers.get("authorization")
        if header is None and (x_api_key := request.headers.get("x-api-key")):
            header = "Bearer " + x_api_key
        token = header[7:].strip() if header and header[:7].lower() == "bearer " else ""
        principal = self.verify(token) if token.startswith(SESSION_PREFIX) else self.keys.authenticate(header)
        path_episode = request.scope.get(PATH_EPISODE)
        if path_episode:
            if principal.episode_id and principal.episode_id != path_episode:
                raise Forbidden("this session key is bound to another episode", code="episode_mismatch")
            principal = replace(principal, episode_id=path_episode)
        return principal

    def end(self, tenant: str, episode_id: str) -> None:
        """The episode ended: this gateway refuses its session keys from now on."""
        self._ended.add((tenant, episode_id))


def sessions_router(sessions: Sessions, turns: TurnWriter, read_body: Any) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/sessions")
    async def create_session(request: Request) -> dict[str, Any]:
        principal = sessions.authenticate(request)
        if principal.episode_id is not None:
            raise Forbidden(
                "a session key cannot create sessions; use a tenant key", code="tenant_key_required"
            )
        body = await read_body(request)
        body = body if isinstance(body, dict) else {}
        episode_id, task, ttl = (
            body.get("episode_id") or new_id(),
            body.get("task"),
            body.get("ttl_s", DEFAULT_TTL_S),
        )
        if not isinstance(episode_id, str) or not (task is None or isinstance(task, str)):
            raise InvalidRequest("'episode_id' and 'task' must be strings")
        if type(ttl) not in (int, float) or not 0 < ttl <= 30 * 24 * 3600:
            raise InvalidRequest("'ttl_s' must be a number of seconds, at most 30 days", param="ttl_s")
        header = request.headers.get("authorization") or ""
        key = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("x-api-key")
        token, expires = sessions.create(key, episode_id, task, float(ttl))
        return {"key": token, "episode_id": episode_id, "task": task, "expires_at": expires}

    @router.post("/v1/sessions/end")
    async def end_session(request: Request) -> dict[str, Any]:
        principal = sessions.authenticate(request)
        if principal.episode_id is None:
            raise InvalidRequest("send the session key (or an /e/{episode_id}/ path) to end a session")
        turns.end_episode(principal.episode_id, principal.tenant, "client")
        sessions.end(principal.tenant, principal.episode_id)
        return {"episode_id": principal.episode_id, "status": "ended"}

    return router
