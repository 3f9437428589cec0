"""Running the service processes: the gateway alone, or the whole embedded stack."""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import typer

from rlgw.config import Settings

log = logging.getLogger("rlgw")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_keys(settings: Settings) -> None:
    """With no API keys the gateway is open: allowed on loopback only, with a loud warning."""
    from gateway.auth import KeyStore

    host = settings.gateway.host
    if not KeyStore(settings.keys_path).open:
        return
    if not is_loopback(host):
        typer.secho(
            f"refusing to bind {host} with no API keys; create one: `rlgw keys create --tenant T`",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    typer.secho(
        "WARNING: no API keys configured — the gateway is open to anyone on this machine "
        "(loopback only). Create keys with `rlgw keys create --tenant T`.",
        fg="yellow",
        err=True,
    )


def run_gateway(settings: Settings) -> None:
    import uvicorn

    from gateway import setup_gateway
    from ledger.wiring import open_ledger
    from rlgw.stack import uvicorn_config

    cfg = settings.gateway
    if not cfg.upstreams:
        typer.secho(
            "no upstream: give --upstream URL (or gateway.upstreams in the config)", fg="red", err=True
        )
        raise typer.Exit(2)
    check_keys(settings)
    ledger = open_ledger(settings, record_queue=settings.gateway.record_queue)
    outlive_reraised_signals()
    try:
        app = setup_gateway(settings, recorder=ledger.recorder, bus=ledger.bus, store=ledger.reader)
        uvicorn.Server(uvicorn_config(app, cfg.host, cfg.port)).run()
    finally:
        ledger.close()  # publishes or spools what is still in memory, closes the log cleanly
    log.info("gateway stopped; ledger closed")


def outlive_reraised_signals() -> None:
    """uvicorn stops on SIGTERM / SIGINT, restores the handlers it found, and then raises the
    signal again. With the default handlers that kills the process (SIGTERM: exit -15) or
    raises KeyboardInterrupt before the ledger is closed, losing what is still in memory.
    Handlers that do nothing let `run()` return, so the ledger closes and the exit status is 0."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)


def run_up(settings: Settings, model: str | Path | None, rubrics: list[Any] | None = None) -> None:
    """`rlgw up`: everything in one process until Ctrl-C, shown live (rlgw/live_view.py)."""
    from rich.console import Console

    from rlgw.live_view import LiveView
    from rlgw.log_routing import route_logs
    from rlgw.startup_view import start_with_progress

    check_keys(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console, began = Console(stderr=True), time.time()
    log_file = route_logs(settings.data_dir, console, settings.telemetry.log_level)
    stack = start_with_progress(settings, console, log_file, model=model, rubrics=rubrics)
    console.print("Ctrl-C stops it")
    try:
        with LiveView(stack, console, title="rl-gateway", since=began) as view:
            while not stop.wait(0.5) and not stack.server.should_exit:
                view.update()
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping …")
        stack.close()
