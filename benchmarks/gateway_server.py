"""A gateway process for benchmarks: the real app, recording on (memory or local bus) or off.
`durable`: the local bus with `ledger.ack = "durable"` (each reply waits for the spool's group commit).

python benchmarks/gateway_server.py --port P --upstream URL [--record off|memory|local|durable] [--data-dir D]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import uvicorn

from gateway import setup_gateway
from ledger.bus import MemoryBus
from ledger.recorder import Recorder
from ledger.records import Encoded, Record
from rlgw.config import Settings


class NullRecorder(Recorder):
    """Recording off: records are dropped at the door (benchmarks only)."""

    def record(self, topic: str, record: Record | Encoded) -> None:
        pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--record", choices=["off", "memory", "local", "durable"], default="memory")
    p.add_argument("--data-dir", type=Path, default=None)
    a = p.parse_args()
    data_dir = a.data_dir or Path(tempfile.mkdtemp(prefix="rlgw-bench-"))
    bus_kind = "local" if a.record in ("local", "durable") else "memory"
    ack = "durable" if a.record == "durable" else "async"
    settings = Settings(
        data_dir=data_dir,
        gateway={"upstreams": [a.upstream], "port": a.port},  # type: ignore[arg-type]
        ledger={"bus": bus_kind, "store": "memory", "ack": ack},  # type: ignore[arg-type]
    )
    if bus_kind == "local":
        from ledger.wiring import open_ledger

        recorder = open_ledger(settings, record_queue=settings.gateway.record_queue).recorder
    else:
        cls = NullRecorder if a.record == "off" else Recorder
        linger_s = settings.ledger.record_linger_ms / 1000.0
        recorder = cls(MemoryBus(), capacity=settings.gateway.record_queue, linger_s=linger_s).start()
    uvicorn.run(
        setup_gateway(settings, recorder=recorder),
        host="127.0.0.1",
        port=a.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        proxy_headers=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
