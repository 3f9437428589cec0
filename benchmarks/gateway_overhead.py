"""What the gateway adds to a request: latency, time to first chunk, stream time, CPU.

Starts a fast fake upstream and four gateways (recording off, recording on into memory,
recording on into the local durable log, the same with `ledger.ack = "durable"`) as separate
processes, then drives the same load
directly and through each gateway, interleaved in rounds, at concurrency 1 and 16,
non-streaming and streaming. Prints added p50/p99, added time-to-first-chunk and total stream
time, requests/s relative to direct, and gateway CPU-ms per request (on-CPU time of
its threads from /proc/PID/task/*/schedstat). `--doors` also drives the same request through
the Responses API and Anthropic Messages front doors of each gateway: their CPU-ms per request
less chat completions' is what translating costs.

    python benchmarks/gateway_overhead.py [--requests 400] [--rounds 3] [--doors chat,responses,messages]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from rlgw.stack import free_port

ROOT = Path(__file__).resolve().parents[1]
BODY = {"model": "rlgw", "messages": [{"role": "user", "content": "benchmark me, please"}], "max_tokens": 32}
DOORS = {  # door -> (path, the same request in that API's shape)
    "chat": ("/chat/completions", BODY),
    "responses": ("/responses", {"model": "rlgw", "input": "benchmark me, please", "max_output_tokens": 32}),
    "messages": ("/messages", BODY),
}


def cpu_seconds(pid: int) -> float:
    """On-CPU time of every thread of a process, in ns precision (schedstat), where /proc's
    utime+stime counts 10 ms clock ticks: too coarse for a fraction of a ms per request."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.1)


@dataclass
class Sample:
    latency: list[float] = field(default_factory=list)
    ttfc: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    count: int = 0


async def one(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool, s: Sample) -> None:
    t0 = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {await r.text()}")
        if stream:
            first = None
            async for _ in r.content.iter_any():
                if first is None:
                    first = time.perf_counter() - t0
            s.ttfc.append(first or 0.0)
        else:
            await r.read()
    s.latency.append(time.perf_counter() - t0)


async def run_load(
    url: str, n: int, conc: int, stream: bool, model: str, s: Sample, pid: int | None, door: str = "chat"
) -> None:
    body = json.dumps({**DOORS[door][1], "model": model, "stream": stream}).encode()
    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(range(n))

        async def worker() -> None:
            for _ in queue:
                await one(session, url, body, stream, s)

        cpu0 = cpu_seconds(pid) if pid else 0.0
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        s.wall += time.perf_counter() - t0
        s.cpu += (cpu_seconds(pid) - cpu0) if pid else 0.0
        s.count += n


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400, help="requests per target per round and case")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--modes",
        default="off,memory,local,durable",
        help="gateway recording modes to compare (durable: local with ledger.ack = durable)",
    )
    ap.add_argument(
        "--doors", default="chat", help="front doors to drive on each gateway (chat,responses,messages)"
    )
    a = ap.parse_args()

    up_port = free_port()
    procs = [spawn(["-m", "gateway.fake_upstream", "--port", str(up_port)])]
    upstream = f"http://127.0.0.1:{up_port}/v1"
    targets: dict[str, tuple[str, str, int | None, str]] = {"direct": (upstream, "fake-base", None, "chat")}
    doors = a.doors.split(",")
    try:
        await wait_up(upstream + "/models")
        for mode in a.modes.split(","):
            port = free_port()
            p = spawn(
                [
                    "benchmarks/gateway_server.py",
                    "--port",
                    str(port),
                    "--upstream",
                    upstream,
                    "--record",
                    mode,
                ]
            )
            procs.append(p)
            for door in doors:
                name = f"gw:{mode}" + ("" if door == "chat" else f"/{door}")
                targets[name] = (f"http://127.0.0.1:{port}/v1", "rlgw", p.pid, door)
            await wait_up(f"http://127.0.0.1:{port}/healthz")
        for url, model, pid, door in targets.values():  # warm up connections and code paths
            await run_load(url + DOORS[door][0], 50, 4, False, model, Sample(), pid, door)
            await run_load(url + DOORS[door][0], 20, 4, True, model, Sample(), pid, door)

        results: dict[tuple[str, int, bool], Sample] = {}
        for rnd in range(a.rounds):
            for conc in (1, 16):
                for stream in (False, True):
                    for name, (url, model, pid, door) in targets.items():
                        s = results.setdefault((name, conc, stream), Sample())
                        path = url + DOORS[door][0]
                        await run_load(path, a.requests, conc, stream, model, s, pid, door)
            print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)

        print(
            f"{'case':<24}{'target':<22}{'p50 ms':>9}{'p99 ms':>9}{'+p50':>8}{'+p99':>8}"
            f"{'ttfc+':>8}{'req/s':>9}{'ratio':>7}{'cpu-ms':>8}"
        )
        summary = {}
        for conc in (1, 16):
            for stream in (False, True):
                d = results[("direct", conc, stream)]
                d50, d99, drps = pct(d.latency, 0.5), pct(d.latency, 0.99), d.count / d.wall
                for name in targets:
                    s = results[(name, conc, stream)]
                    p50, p99, rps = pct(s.latency, 0.5), pct(s.latency, 0.99), s.count / s.wall
                    ttfc = pct(s.ttfc, 0.5) - pct(d.ttfc, 0.5) if stream else float("nan")
                    cpu_ms = s.cpu / s.count * 1000 if name != "direct" else float("nan")
                    case = f"c={conc} {'stream' if stream else 'plain'}"
                    print(
                        f"{case:<24}{name:<22}{p50:9.2f}{p99:9.2f}{p50 - d50:8.2f}{p99 - d99:8.2f}"
                        f"{ttfc:8.2f}{rps:9.0f}{rps / drps:7.2f}{cpu_ms:8.3f}"
                    )
                    summary[f"{case}|{name}"] = {
                        "added_p50_ms": round(p50 - d50, 3),
                        "added_p99_ms": round(p99 - d99, 3),
                        "added_ttfc_p50_ms": None if not stream else round(ttfc, 3),
                        "rps_ratio": round(rps / drps, 3),
                        "cpu_ms_per_req": None if name == "direct" else round(cpu_ms, 3),
                    }
        print("stream rows: p50/p99 are whole-stream times (so +p50 is the total stream time added)")
        for conc in (1, 16):
            off = summary.get(f"c={conc} plain|gw:off", {}).get("cpu_ms_per_req")
            for mode in ("memory", "local", "durable"):
                on = summary.get(f"c={conc} plain|gw:{mode}", {}).get("cpu_ms_per_req")
                if off and on:
                    share = (on - off) / on * 100
                    print(f"c={conc} plain: recording into {mode} costs {share:.0f}% of the gateway's CPU")
        for key, row in summary.items():  # what translating costs, per door, over chat completions
            case, name = key.split("|")
            if "/" in name:
                chat = summary[f"{case}|{name.split('/')[0]}"]["cpu_ms_per_req"]
                mine = row["cpu_ms_per_req"]
                if chat is None or mine is None:
                    continue
                extra = mine - chat
                print(f"{case} {name}: {extra:+.3f} CPU-ms per request over chat completions")
        print(json.dumps(summary))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
