"""What an evaluation running costs live requests (the eval gate's spare-capacity rule).

One gateway (in this process, memory ledger) in front of an upstream: vLLM-CPU on the built-in
tiny model (`--vllm`), a running OpenAI-compatible server (`--upstream URL`), or the fake
upstream with a fixed delay (default). Live requests arrive the whole time — closed-loop
clients (`--live N`), or open-loop Poisson arrivals (`--rate R` per second, which leaves the
idle moments real traffic has); in interleaved rounds of `--seconds` each, evaluation clients
send pinned evaluation requests (POST /admin/eval/chat/completions, as rewards/evaluation.py
does) under

    none     no evaluation
    gated    the gate's admission as configured (versions.eval_concurrency, eval_live_limit)
    idle     evaluation only while no live request is in flight, one at a time (limit 1)
    ungated  no admission rule: every evaluation client at once
    yield    the gate as configured and evaluation requests yield to live ones (versions.eval_yield:
             cancelled upstream when a live request reaches their replica, sent again when idle)

The other modes run with `eval_yield` off. Evaluation clients work through evaluations of
`--prompts` prompts, both sides (2 x prompts requests each, as rewards/evaluation.py sends).
Prints, per mode, live p50/p99 latency, live requests/s, evaluation answers/s, the mean time
an evaluation took (from its first request sent to its last answer), the time evaluation
requests waited for capacity, pre-emptions and requests run past the yield bound
(docs/versions.md, "Evaluation traffic"), and the load average before and after.

    python benchmarks/eval_interference.py [--vllm | --upstream URL] [--live 4 | --rate 4]
        [--evals 8] [--prompts 16] [--seconds 20] [--rounds 3] [--modes none,yield]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from rlgw.stack import free_port

LIVE = {
    "model": "rlgw",
    "messages": [{"role": "user", "content": "Name a colour, please."}],
    "max_tokens": 32,
}
EVAL = {"messages": [{"role": "user", "content": "What colour is the sky?"}], "max_tokens": 32, "seed": 1}
MODES = ("none", "gated", "idle", "ungated", "yield")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def start_gateway(upstream: str, data_dir: Path) -> tuple[Any, Any, str]:
    import uvicorn

    from gateway import setup_gateway
    from ledger.bus import MemoryBus
    from ledger.memstore import MemoryStore
    from ledger.recorder import Recorder
    from rlgw.config import Settings

    settings = Settings(
        data_dir=data_dir,
        gateway={"upstreams": [upstream]},  # type: ignore[arg-type]
        ledger={"bus": "memory", "store": "memory"},  # type: ignore[arg-type]
    )
    bus = MemoryBus()
    recorder = Recorder(bus, topic_prefix=settings.ledger.topic_prefix).start()
    app = setup_gateway(settings, recorder=recorder, bus=bus, store=MemoryStore())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, app, f"http://127.0.0.1:{port}"


async def round_of(
    root: str, mode: str, live: int, evals: int, seconds: float, rate: float, prompts: int = 16
) -> dict[str, Any]:
    latencies: list[float] = []
    answered = 0
    per_eval = 2 * prompts  # requests in one evaluation: the version's and the parent's answers
    taken = 0  # requests handed out
    started: dict[int, float] = {}  # evaluation -> its first request's start
    done: dict[int, int] = {}
    durations: list[float] = []
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=root, timeout=120) as http:

        async def live_client() -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = await http.post("/v1/chat/completions", json=LIVE)
                if r.status_code == 200:
                    latencies.append((time.perf_counter() - t0) * 1000)

        async def eval_client() -> None:
            nonlocal answered, taken
            while time.monotonic() < stop:
                k, taken = taken // per_eval, taken + 1
                started.setdefault(k, time.monotonic())
                r = await http.post("/admin/eval/chat/completions", json={**EVAL, "version": "base"})
                answered += r.status_code == 200
                done[k] = done.get(k, 0) + 1
                if done[k] == per_eval:
                    durations.append(time.monotonic() - started[k])

        async def one_live() -> None:
            t0 = time.perf_counter()
            r = await http.post("/v1/chat/completions", json=LIVE)
            if r.status_code == 200:
                latencies.append((time.perf_counter() - t0) * 1000)

        async def arrivals() -> None:  # open loop: Poisson arrivals at `rate` per second
            rng, sent = random.Random(0), []
            while time.monotonic() < stop:
                sent.append(asyncio.create_task(one_live()))
                await asyncio.sleep(rng.expovariate(rate))
            await asyncio.gather(*sent)

        n_evals = 0 if mode == "none" else evals
        load = [arrivals()] if rate > 0 else [live_client() for _ in range(live)]
        await asyncio.gather(*load, *(eval_client() for _ in range(n_evals)))
    return {"latencies": latencies, "answered": answered, "durations": durations}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vllm", action="store_true", help="start vLLM-CPU on the built-in tiny model")
    p.add_argument("--upstream", help="a running OpenAI-compatible server's /v1 URL")
    p.add_argument("--delay-ms", type=float, default=50.0, help="the fake upstream's delay")
    p.add_argument("--live", type=int, default=4, help="live clients (closed loop)")
    p.add_argument("--rate", type=float, default=0.0, help="open-loop live requests per second (0: --live)")
    p.add_argument("--evals", type=int, default=8, help="evaluation clients")
    p.add_argument("--prompts", type=int, default=16, help="prompts per evaluation")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated modes to run (default: all)")
    a = p.parse_args()
    modes = [m for m in MODES if m in a.modes.split(",")]
    tmp = TemporaryDirectory()
    engine, fake = None, None
    server = None
    try:
        if a.vllm:
            from gateway.engine import EngineShape, start_vllm, wait_ready
            from learner.tiny_model import build_tiny_model

            model = build_tiny_model(Path(tmp.name) / "model")
            port = free_port()
            engine = start_vllm(
                model, port, log_path=Path(tmp.name) / "vllm.log", shape=EngineShape.of(model)
            )
            upstream = f"http://127.0.0.1:{port}/v1"
            wait_ready(upstream, 600, proc=engine, log_path=Path(tmp.name) / "vllm.log")
        elif a.upstream:
            upstream = a.upstream
        else:
            fake_port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "gateway.fake_upstream",
                "--port",
                str(fake_port),
                "--delay-ms",
                str(a.delay_ms),
            ]
            fake = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
            upstream = f"http://127.0.0.1:{fake_port}/v1"
            time.sleep(2.0)
        server, app, root = start_gateway(upstream, Path(tmp.name))
        admission = app.app.state.eval_admission
        gated = (admission.concurrency, admission.live_limit)
        load_before = os.getloadavg()
        await round_of(root, "gated", a.live, a.evals, 3, a.rate)  # warm-up
        results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        counted = {m: [0.0, 0, 0] for m in modes}  # waited s, pre-emptions, run past the bound
        for _ in range(a.rounds):
            for mode in modes:
                limits = {"ungated": (a.evals, 10**6), "idle": (1, 1)}
                admission.concurrency, admission.live_limit = limits.get(mode, gated)
                admission.yield_to_live = mode == "yield"
                before = (admission.waited_s, admission.preemptions, admission.forced)
                results[mode].append(
                    await round_of(root, mode, a.live, a.evals, a.seconds, a.rate, a.prompts)
                )
                after = (admission.waited_s, admission.preemptions, admission.forced)
                for i in range(3):
                    counted[mode][i] += after[i] - before[i]
        where = "vLLM-CPU tiny model" if a.vllm else (a.upstream or f"fake upstream, {a.delay_ms:g} ms")
        print(
            f"eval interference: {where}; "
            f"{f'{a.rate:g} live requests/s (Poisson)' if a.rate else f'{a.live} live clients'}, "
            f"{a.evals} eval clients, "
            f"gate: eval_concurrency {gated[0]}, eval_live_limit {gated[1]}/replica; "
            f"yield bound: {admission.max_preemptions} pre-emptions / {admission.deadline_s:g} s; "
            f"{a.rounds} x {a.seconds:g} s per mode; load average (1 min) "
            f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
        )
        print(
            f"{'mode':<8} {'live p50 ms':>11} {'live p99 ms':>11} {'live req/s':>10} "
            f"{'eval ans/s':>10} {f'{a.prompts}-prompt eval s':>16} {'eval wait s (sum)':>17} "
            f"{'pre-empted':>10} {'past bound':>10}"
        )
        total = a.rounds * a.seconds
        for mode in modes:
            lat = [x for r in results[mode] for x in r["latencies"]]
            answered = sum(r["answered"] for r in results[mode])
            took = [d for r in results[mode] for d in r["durations"]]
            mean = sum(took) / len(took) if took else float("nan")
            waited, preempted, forced = counted[mode]
            print(
                f"{mode:<8} {pct(lat, 0.5):>11.1f} {pct(lat, 0.99):>11.1f} {len(lat) / total:>10.1f} "
                f"{answered / total:>10.1f} {mean:>16.1f} {waited:>17.1f} {preempted:>10.0f} {forced:>10.0f}"
            )
    finally:
        if server is not None:
            server.should_exit = True
        if fake is not None:
            fake.terminate()
        if engine is not None:
            from gateway.engine import stop_vllm

            stop_vllm(engine)
        tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
