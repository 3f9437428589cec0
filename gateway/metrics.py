"""Prometheus metrics of the gateway, on one registry per app (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.errors import APIError, ClientGone

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rlgw_requests",
            "Chat requests by version, status and mode",
            ["version", "status", "stream"],
            registry=r,
        )
        self.latency = Histogram(
            "rlgw_request_seconds", "Whole-request latency", ["version"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "rlgw_ttft_seconds",
            "Time to first streamed chunk",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("rlgw_errors", "Error replies by type", ["type"], registry=r)
        self.eval_preemptions = Counter(
            "rlgw_eval_preemptions",
            "Evaluation requests cancelled upstream because a live request came to their replica",
            registry=r,
        )
        self.record_queue = Gauge("rlgw_record_queue", "Records waiting for the ledger", registry=r)
        self.disconnects = Counter(
            "rlgw_client_disconnects",
            "Clients that went away before their reply was complete (during: request | reply)",
            ["during"],
            registry=r,
        )
        self.disk_outage = Gauge(
            "rlgw_ledger_disk_outage",
            "1 while the ledger's disk refuses writes (records wait in memory)",
            registry=r,
        )
        self.disk_errors = Gauge(
            "rlgw_ledger_disk_errors",
            "Ledger disk writes refused since start (full, failing, read-only)",
            registry=r,
        )
        self.memory_bytes = Gauge(
            "rlgw_ledger_memory_bytes",
            "Record bytes held in memory while the ledger's disk refuses them",
            registry=r,
        )
        self.replica_healthy = Gauge(
            "rlgw_replica_healthy", "1 if a replica is healthy", ["replica"], registry=r
        )
        self.replica_outstanding = Gauge(
            "rlgw_replica_outstanding", "Requests in flight per replica", ["replica"], registry=r
        )
        self._children: dict[tuple[str, int, bool], tuple[Counter, Histogram, Histogram]] = {}

    def request(
        self, version: str, status: int, stream: bool, seconds: float, ttft: float | None = None
    ) -> None:
        key = (version, status, stream)
        children = self._children.get(key)
        if children is None:  # labels() costs more than the update itself: look it up once
            children = (
                self.requests.labels(version, str(status), "true" if stream else "false"),
                self.latency.labels(version),
                self.ttft.labels(version),
            )
            self._children[key] = children
        count, latency, first = children
        count.inc()
        latency.observe(seconds)
        if ttft is not None:
            first.observe(ttft)

    def api_error(self, exc: APIError) -> None:
        """An error answered: a client that went away is counted as such, not as our error."""
        if isinstance(exc, ClientGone):
            self.disconnects.labels("request").inc()
        else:
            self.errors.labels(exc.type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
