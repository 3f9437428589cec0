"""The gateway: OpenAI-compatible endpoints, episode capture, feedback, the serving pool.

`gateway.setup_gateway(...)` builds the app (gateway/wiring.py). It is imported on first use,
so that the modules used without an app (keys, the fake upstream) stay light to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.wiring import setup_gateway

__all__ = ["setup_gateway"]


def __getattr__(name: str) -> Any:
    if name == "setup_gateway":
        from gateway.wiring import setup_gateway

        return setup_gateway
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
