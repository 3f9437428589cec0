"""The routing hook: which model version serves a request, and under which upstream name.

`BaseRouter` serves everything from the base model. The versions service replaces it with a
router that splits new episodes between the serving version and a canary, and keeps every
episode on the version that served its first turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import NoReplica
from ledger.published import BASE_VERSION


@dataclass(frozen=True, slots=True)
class Route:
    version: str  # the version id recorded on the turn
    upstream_model: str  # the model name sent to the replica (base model or adapter name)


class Router(Protocol):
    def route(self, episode_id: str, tenant: str) -> Route: ...

    def describe(self) -> list[dict[str, Any]]:
        """The versions behind the public model, for GET /v1/models."""
        ...


class BaseRouter:
    """Everything goes to the base model; its upstream name is configured or asked of the pool."""

    def __init__(self, base_model: Callable[[], str | None]) -> None:
        self._base_model = base_model

    def route(self, episode_id: str, tenant: str) -> Route:
        name = self._base_model()
        if name is None:
            raise NoReplica("no upstream replica has reported its model yet", code="no_healthy_replica")
        return Route(BASE_VERSION, name)

    def describe(self) -> list[dict[str, Any]]:
        return [{"id": BASE_VERSION, "status": "serving", "share": 1.0, "upstream_model": self._base_model()}]
