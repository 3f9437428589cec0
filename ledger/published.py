"""The contract between the learner and the gateway for a new model version.

The learner publishes a `PublishedVersion` (over HTTP as the JSON body of
`POST /admin/versions`, or in process in `rlgw up`); the gateway registers it, loads its adapter
into every replica and canaries it. Both sides use this one model: a misspelt field is an error
(`extra="forbid"`), never silently dropped.

`BASE_VERSION` is the id the gateway gives the base model, and the parent the learner names
before it has trained anything.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

BASE_VERSION = "base"


class PublishedVersion(BaseModel):
    """A saved version the learner hands to the gateway (or the all-zero base adapter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    """The version id (unique; the gateway serves it as adapter `rlgw-<version>`)."""
    adapter_path: str
    """The saved adapter (or weights) folder, readable by every replica."""
    parent: str | None = None
    """The version it was trained on top of (None: whatever serves when it is registered)."""
    data_window: dict[str, Any] = Field(default_factory=dict)
    """The ledger positions it was trained on (`after`, `until`, `episodes`, `steps`), and under
    `training` the learner's figures for each of its steps (ledger/training.py)."""
    base_equivalent: bool = False
    """An all-zero adapter: the gateway serves the base model through it (docs/vllm.md,
    the mixed-batch bug), instead of registering a version."""
    traceparent: str | None = None
    """The learner's span for this version (ledger.tracing): carried on its version events."""
