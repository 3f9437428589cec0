"""Tenant API keys, stored hashed; an admin scope for admin routes.

Keys look like `rlgw-<43 url-safe chars>` and are shown once, when created. The keys file
holds only their SHA-256 (a key has 256 bits of entropy, so a fast hash is enough). With no
keys configured the gateway runs open (tenant "default", admin allowed) and binds to
loopback only.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from gateway.errors import Forbidden, Unauthorized

PREFIX = "rlgw-"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    admin: bool
    episode_id: str | None = None  # bound by a session key or an /e/{episode_id}/ path (gateway/sessions.py)
    task: str | None = None


OPEN = Principal(tenant="default", admin=True)


class KeyIn(BaseModel):
    """A key to mint (`rlgw keys create`): its tenant, and whether it has the admin scope."""

    model_config = ConfigDict(extra="forbid")

    tenant: str
    admin: bool = False

    @field_validator("tenant")
    @classmethod
    def _name(cls, tenant: str) -> str:
        if not tenant or not tenant.replace("-", "").replace("_", "").isalnum():
            raise ValueError("tenant must be letters, digits, '-' or '_'")
        return tenant


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_hash: dict[str, Principal] = {}
        self.reload()

    @property
    def open(self) -> bool:
        return not self._by_hash

    def reload(self) -> None:
        if not self.path.is_file():
            self._by_hash = {}
            return
        entries = json.loads(self.path.read_text() or "[]")
        self._by_hash = {e["sha256"]: Principal(e["tenant"], bool(e.get("admin"))) for e in entries}

    def create(self, tenant: str, admin: bool = False) -> str:
        """Mint a key, store its hash, return the key (the only time it is seen)."""
        try:
            spec = KeyIn(tenant=tenant, admin=admin)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        key = PREFIX + secrets.token_urlsafe(32)
        entries = json.loads(self.path.read_text() or "[]") if self.path.is_file() else []
        entries.append(
            {"sha256": _digest(key), "tenant": spec.tenant, "admin": spec.admin, "created_at": time.time()}
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)
        self.reload()
        return key

    def by_digest_prefix(self, prefix: str) -> tuple[str, Principal] | None:
        """The key whose SHA-256 (hex) starts with `prefix`: its digest and principal."""
        return next(((d, p) for d, p in self._by_hash.items() if d.startswith(prefix)), None)

    def authenticate(self, authorization: str | None) -> Principal:
        if self.open:
            return OPEN
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        principal = self._by_hash.get(_digest(authorization[7:].strip()))
        if principal is None:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        return principal


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("this route needs an admin key", code="admin_required")
