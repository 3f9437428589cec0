"""Publishing a version: the learner tells the gateway, which loads it into the pool.

One seam, one method: `publish(version)`, with the `ledger.published.PublishedVersion` record.
`HttpPublisher` POSTs it as JSON to `{gateway}/admin/versions` with the admin bearer key; the
gateway registers the version, loads it into every replica and starts its canary.
`base_equivalent=True` marks an all-zero adapter the gateway serves the base model through
(vLLM's mixed-batch base-model bug, docs/vllm.md); the learner publishes one when it starts.
Publishing the same version twice must be harmless on the gateway's side (a retry after a
lost reply does that).
Only transient failures are retried (connection errors, timeouts, 429, 502, 503, 504), with
exponential backoff; any other answer raises `PublishError` at once. `fleet()` asks what the
gateway serves (learner/follow.py: the learner follows rollbacks, and `Fleet.protect` names the
versions `keep_versions` must spare). `FakePublisher` keeps the calls in memory for tests and
can be told to fail its first calls.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from learner.follow import Fleet
from ledger.published import BASE_VERSION, PublishedVersion

log = logging.getLogger(__name__)
TRANSIENT_STATUS = {429, 502, 503, 504}


class PublishError(RuntimeError):
    """The gateway refused the version, or stayed unreachable through every retry."""


class Publisher(Protocol):
    def publish(self, version: PublishedVersion) -> Any: ...


class HttpPublisher:
    def __init__(
        self,
        gateway_url: str,
        admin_key: str | None,
        *,
        retries: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = gateway_url.rstrip("/") + "/admin/versions"
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout_s, transport=transport)
        self.retries = max(1, retries)
        self.backoff_s = backoff_s

    def publish(self, version: PublishedVersion) -> None:
        body = version.model_dump(mode="json")
        last = ""
        for attempt in range(self.retries):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.client.post(self.url, json=body)
            except httpx.TransportError as exc:  # connect, read, write errors and timeouts
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code < 300:
                return
            last = f"HTTP {resp.status_code}: {resp.text[:300]}"
            if resp.status_code not in TRANSIENT_STATUS:
                raise PublishError(f"gateway refused version {version.version}: {last}")
        raise PublishError(f"version {version.version} not published after {self.retries} attempts: {last}")

    def fleet(self) -> Fleet:
        """What the gateway serves and what it rolled back (learner/follow.py)."""
        resp = self.client.get(self.url)
        resp.raise_for_status()
        return Fleet.from_listing(resp.json())

    def close(self) -> None:
        self.client.close()


def publish_pending(
    pending: list[PublishedVersion], publisher: Any, published: list[str]
) -> list[PublishedVersion]:
    """Publish saved versions in order (each one published goes on `published`); stop at the
    first failure and return the rest, still pending (learner/loop.py)."""
    for i, p in enumerate(pending):
        try:
            publisher.publish(p)
        except Exception as exc:  # the boundary: whatever the gateway says, retry before the next
            log.error("learner could not publish %s (will retry): %s", p.version, exc)
            return pending[i:]
        if not p.base_equivalent:
            published.append(p.version)
    return []


@dataclass
class FakePublisher:
    """Records what would have been published; `fail_first` calls raise PublishError first."""

    fail_first: int = 0
    published: list[dict[str, Any]] = field(default_factory=list)  # versions
    base_adapters: list[dict[str, Any]] = field(default_factory=list)  # base_equivalent ones
    attempts: int = 0
    serving: str = BASE_VERSION  # what the fake gateway serves; tests roll back by setting these
    rolled_back: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)  # canary, queued and pinned versions

    def fleet(self) -> Fleet:
        parents = {v["version"]: v.get("parent") for v in self.published}
        return Fleet(self.serving, frozenset(self.rolled_back), parents, held=frozenset(self.held))

    def publish(self, version: PublishedVersion) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            raise PublishError(f"fake failure {self.attempts}")
        call = version.model_dump(exclude={"base_equivalent"})
        (self.base_adapters if version.base_equivalent else self.published).append(call)
