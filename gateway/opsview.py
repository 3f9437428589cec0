"""What /readyz and /metrics say about the serving pool and the ledger, and to whom.

Replica base URLs are internal addresses: they are shown on /readyz only to a caller with an
admin key, and /metrics (scraped without one) numbers the replicas instead, unless
`gateway.expose_upstreams` says otherwise. An open gateway (no keys) has no admin key to show
them to.
"""

from __future__ import annotations

from typing import Any

from gateway.auth import KeyStore
from gateway.errors import APIError
from gateway.metrics import Metrics
from gateway.pool import Pool
from ledger.recorder import Recorder


def shows_addresses(keys: KeyStore, authorization: str | None, expose: bool) -> bool:
    if expose:
        return True
    if keys.open or not authorization:
        return False
    try:
        return keys.authenticate(authorization).admin
    except APIError:
        return False


def readiness(pool: Pool, recorder: Recorder, addresses: bool) -> tuple[bool, dict[str, Any]]:
    """(ready, body): ready while a replica is healthy and the ledger takes records."""
    replicas = []
    for i, r in enumerate(pool.replicas):
        entry: dict[str, Any] = {"replica": i, "healthy": r.healthy, "tokens": r.tokens}
        if addresses:
            entry["url"] = r.url
        replicas.append(entry)
    outage, _errors, held = recorder.disk
    ledger = "ok" if recorder.accepting else "refusing"
    ready = bool(pool.healthy()) and recorder.accepting
    body = {
        "status": "ready" if ready else "unavailable",
        "replicas": replicas,
        "ledger": {"status": ledger, "disk_outage": outage, "memory_bytes": held},
    }
    return ready, body


def update_metrics(m: Metrics, pool: Pool, recorder: Recorder, addresses: bool) -> None:
    """Set the gauges read at scrape time."""
    m.record_queue.set(recorder.pending)
    outage, errors, held = recorder.disk
    m.disk_outage.set(1 if outage else 0)
    m.disk_errors.set(errors)
    m.memory_bytes.set(held)
    for i, r in enumerate(pool.replicas):
        label = r.url if addresses else str(i)
        m.replica_healthy.labels(label).set(1 if r.healthy else 0)
        m.replica_outstanding.labels(label).set(r.outstanding)
