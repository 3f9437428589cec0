"""`rlgw store-writer` and `rlgw learner`: the scale-out processes beside the gateway."""

from __future__ import annotations

import signal
import threading

import typer
from prometheus_client import CollectorRegistry, start_http_server

from rlgw.installed import preflight
from rlgw.options import ConfigOpt, DataDirOpt, settings_from


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


MetricsPortOpt = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics on this port.")


def _metrics_registry(port: int | None) -> CollectorRegistry | None:
    if port is None:
        return None
    registry = CollectorRegistry()
    start_http_server(port, registry=registry)
    return registry


def store_writer(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, metrics_port: int | None = MetricsPortOpt
) -> None:
    """Move records from the bus into the store, in batches, as one member of the writers' group."""
    from ledger.wiring import open_bus, open_store, open_writer

    settings = settings_from(config, data_dir=data_dir)
    preflight(settings.ledger.store)
    cfg = settings.ledger
    bus, store = open_bus(settings), open_store(settings)
    writer = open_writer(settings, bus, store, _metrics_registry(metrics_port))
    stop = _stop_on_signals()
    typer.secho(f"store writer: {cfg.bus} → {cfg.store}", err=True)
    writer.start()  # retries while the bus or the store is down; commits only after inserts
    try:
        stop.wait()
    finally:
        writer.close()
        bus.close()
        store.close()


def learner(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    gateway: str = typer.Option(None, "--gateway", help="Gateway root URL to publish versions to."),
    metrics_port: int | None = MetricsPortOpt,
) -> None:
    """Train on scored traffic from the store and publish each version to the gateway.

    Under torchrun (one process per GPU) rank 0 alone opens the store, the bus, the metrics
    port, traces and publishes; the other ranks train their shard of each step.
    On the embedded store (one process's own) the learner fills a store of its own from the
    bus, with a writer in this process: the store writer's store cannot be opened here."""
    settings = settings_from(config, data_dir=data_dir, **{"learner.admin_url": gateway})
    preflight(settings.ledger.store, learner=True)
    from learner.distributed import join_world
    from learner.loop import run_learner
    from learner.publish import HttpPublisher
    from ledger.tracing import setup_tracing
    from ledger.wiring import open_bus, open_store, open_writer, runs_writer

    url = settings.learner.admin_url
    if not url:
        typer.secho("give --gateway URL (or learner.admin_url in the config)", fg="red", err=True)
        raise typer.Exit(2)
    stop = _stop_on_signals()
    world = join_world(settings.learner.device)
    if not world.leader:
        try:
            run_learner(settings, None, None, stop, world=world)
        finally:
            world.close()
        return
    registry = _metrics_registry(metrics_port)
    store = open_store(settings)
    bus = open_bus(settings) if runs_writer(settings) else None
    writer = open_writer(settings, bus, store, registry).start() if bus is not None else None
    publisher = HttpPublisher(url, settings.learner.admin_key, retries=settings.learner.publish_retries)
    try:
        tracer = setup_tracing(settings.telemetry, "rlgw-learner")
        report = run_learner(settings, store, publisher, stop, registry=registry, tracer=tracer, world=world)
        typer.secho(f"learner stopped after {len(report.steps)} steps, versions {report.versions}", err=True)
    finally:
        publisher.close()
        if writer is not None:
            writer.close()
        if bus is not None:
            bus.close()
        store.close()
        world.close()
