"""A bounded load run through the whole embedded stack: recording, scoring and training on.

`rlgw up` in this process (vLLM-CPU on the built-in tiny model, LocalBus, the embedded store,
the rubric worker, the learner), then `--requests` chat requests from `--concurrency` clients
(one-turn episodes, ended by header), stopping at the count or after `--seconds`. Prints
sustained requests/s, p50/p99 latency, and the ledger's lag at the end: records not yet
published, episodes not yet scored in the store (then how long they took to catch up).

    python benchmarks/load.py [--requests 2000] [--concurrency 16] [--seconds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def drive(url: str, n: int, conc: int, seconds: float) -> tuple[list[float], int, float]:
    body = {"model": "rlgw", "messages": [{"role": "user", "content": "Say a colour"}], "max_tokens": 8}
    latencies: list[float] = []
    failed = 0
    left = iter(range(n))
    deadline = time.monotonic() + seconds
    headers = {"X-Task": "colours", "X-Episode-End": "true"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:

        async def client() -> None:
            nonlocal failed
            for _ in left:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                async with s.post(url + "/chat/completions", json=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        failed += 1
                        continue
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(conc)))
        return latencies, failed, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=300)
    a = ap.parse_args()

    from rlgw.config import Settings
    from rlgw.demo import demo_settings
    from rlgw.demo_users import COLOUR_RUBRIC
    from rlgw.stack import free_port, start_stack

    work = Path(tempfile.mkdtemp(prefix="rlgw-load-"))
    settings = demo_settings(Settings(data_dir=work, gateway={"port": free_port()}))  # type: ignore[arg-type]
    stack = start_stack(settings, rubrics=[COLOUR_RUBRIC], say=lambda m: print(m, file=sys.stderr))
    try:
        latencies, failed, wall = asyncio.run(drive(stack.url, a.requests, a.concurrency, a.seconds))
        done = len(latencies)
        store, recorder = stack.ledger.reader, stack.ledger.recorder
        at_end = time.monotonic()
        lag = {
            "records_unpublished": recorder.pending,
            "turns_not_in_store": done - store.counts()["turns"],
            "episodes_not_scored": done - store.counts()["scores"],
        }
        while store.counts()["scores"] < done and time.monotonic() - at_end < 60:
            time.sleep(0.5)
        caught_up = round(time.monotonic() - at_end, 1)
        lat = sorted(latencies)
        versions = [v["id"] for v in stack.services.versions.listing()]
        print(
            json.dumps(
                {
                    "requests_ok": done,
                    "failed": failed,
                    "seconds": round(wall, 1),
                    "requests_per_s": round(done / wall, 1),
                    "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
                    "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1),
                    "lag_at_end": lag,
                    "scored_all_after_s": caught_up,
                    "versions": versions,
                }
            )
        )
    finally:
        stack.close()


if __name__ == "__main__":
    main()
