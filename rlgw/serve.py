"""Building and running the gateway process from settings."""

from __future__ import annotations

import ipaddress
import logging

import typer

from ledger.config import Settings

log = logging.getLogger("rlgw")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_gateway(settings: Settings) -> None:
    import uvicorn

    from gateway.app import Services, create_app
    from gateway.auth import KeyStore
    from gateway.pool import Pool
    from ledger.wiring import open_ledger

    cfg = settings.gateway
    if not cfg.upstreams:
        typer.secho(
            "no upstream: give --upstream URL (or gateway.upstreams in the config)", fg="red", err=True
        )
        raise typer.Exit(2)
    keys = KeyStore(settings.keys_path)
    if keys.open:
        if not is_loopback(cfg.host):
            typer.secho(
                f"refusing to bind {cfg.host} with no API keys; create one: `rlgw keys create --tenant T`",
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
    ledger = open_ledger(settings)
    pool = Pool(
        cfg.upstreams,
        connect_timeout_s=cfg.connect_timeout_s,
        request_timeout_s=cfg.request_timeout_s,
        health_interval_s=cfg.health_interval_s,
    )
    svc = Services(settings=settings, pool=pool, recorder=ledger.recorder, keys=keys, store=ledger.reader)
    app = create_app(svc)
    try:
        uvicorn.run(
            app,
            host=cfg.host,
            port=cfg.port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
        )
    finally:
        ledger.close()
