"""`rlgw replay-rejected`: send the records the bus once refused for good again."""

from __future__ import annotations

import typer

from rlgw.options import ConfigOpt, DataDirOpt, settings_from


def replay_rejected(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Send the records kept in <data_dir>/spool/rejected again (after raising
    ledger.max_record_bytes and the topics' max.message.bytes, say); those still refused stay."""
    from ledger import rejected
    from ledger.bus import BusUnavailable
    from ledger.wiring import open_bus, spool_dir

    settings = settings_from(config, data_dir=data_dir)
    directory = spool_dir(settings) / "rejected"
    if not directory.is_dir():
        typer.echo(f"nothing to replay: {directory} does not exist")
        return
    bus = open_bus(settings)
    try:
        done = rejected.replay(directory, bus)
    except BusUnavailable as exc:
        typer.secho(
            f"the bus is unavailable ({exc}); what was not sent stays in {directory}", fg="red", err=True
        )
        raise typer.Exit(1) from exc
    finally:
        bus.close()
    for topic, n in sorted(done.sent.items()):
        typer.echo(f"{topic}: {n} sent, {len(done.refused.get(topic, []))} refused again")
    for topic, reasons in sorted(done.refused.items()):
        typer.secho(f"{topic}: still refused ({reasons[0]}); kept in {directory}", fg="yellow", err=True)
    if not done.sent:
        typer.echo(f"nothing to replay in {directory}")
    if done.refused:
        raise typer.Exit(1)
