"""Episodes scored per second by one rubric worker with the built-in (non-judge) scorers.

Publishes episodes (two turns, then feedback that marks it done) to a bus in chunks of 1,000,
as live traffic arrives, and times one worker while it scores each chunk: parsing, state,
scoring with every built-in scorer but the judge, publishing and committing are all in the
figure; serialising and publishing the traffic are not. On a shared machine the second figure
(episodes per CPU-second of this process) is the steadier one.

    python -m benchmarks.rubric_throughput [--episodes 20000] [--bus memory|local]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from ledger.bus import Bus, MemoryBus
from ledger.records import Feedback, Turn, TurnChoice
from rewards import load_rubrics
from rewards.worker import RubricWorker

RUBRIC = """
[[rubric]]
name = "bench"
[[rubric.scorer]]
use = "contains"
reference = "expected"
[[rubric.scorer]]
use = "exact_match"
reference = "expected"
weight = 0
[[rubric.scorer]]
use = "regex"
pattern = "(?i)order #\\\\d+"
[[rubric.scorer]]
use = "valid_json"
weight = 0
[[rubric.scorer]]
use = "json_schema"
schema = { type = "object", required = ["answer"] }
[[rubric.scorer]]
use = "tool_call_wellformed"
[[rubric.scorer]]
use = "tool_success"
[[rubric.scorer]]
use = "feedback"
[[rubric.scorer]]
use = "implicit_feedback"
[[rubric.scorer]]
use = "length_penalty"
max_chars = 400
[[rubric.scorer]]
use = "latency_penalty"
max_ms = 2000
"""


def episode_records(i: int) -> list[tuple[str, object]]:
    eid = f"bench-{i}"
    messages = [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": f"Where is my order #{i}?"},
    ]
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 1}'}}
    first = Turn(
        episode_id=eid,
        model="m",
        version="v1",
        latency_ms=300,
        metadata={"expected": "shipped"},
        request={"messages": messages, "tools": [{"type": "function", "function": {"name": "lookup"}}]},
        choices=[TurnChoice(message={"role": "assistant", "content": None, "tool_calls": [call]})],
        usage={"completion_tokens": 12},
    )
    answer = f'{{"answer": "order #{i} shipped yesterday"}}'
    history = [
        *messages,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
    ]
    second = Turn(
        episode_id=eid,
        model="m",
        version="v1",
        latency_ms=450,
        metadata={"expected": "shipped"},
        request={"messages": history},
        choices=[TurnChoice(message={"role": "assistant", "content": answer})],
        usage={"completion_tokens": 20},
    )
    return [
        ("turns", first),
        ("turns", second),
        ("feedback", Feedback(episode_id=eid, name="tool_success", value=True, done=True)),
    ]


def chunks(n: int, size: int) -> list[dict[str, list[tuple[str, bytes]]]]:
    """The records of n episodes, serialised, in chunks of `size` episodes (as traffic arrives)."""
    out = []
    for start in range(0, n, size):
        by_topic: dict[str, list[tuple[str, bytes]]] = {"turns": [], "feedback": []}
        for i in range(start, min(n, start + size)):
            for topic, rec in episode_records(i):
                by_topic[topic].append((rec.key, rec.to_bytes()))  # type: ignore[attr-defined]
        out.append(by_topic)
    return out


async def run(bus: Bus, n: int, rubric_path: Path, chunk: int = 1000) -> tuple[float, float]:
    """Publish a chunk, let the worker score it; time only the worker."""
    worker = RubricWorker(load_rubrics(rubric_path), bus, batch=4 * chunk)
    busy = cpu = 0.0
    for part in chunks(n, chunk):
        for topic, items in part.items():
            bus.publish(topic, items)
        start, start_cpu = time.perf_counter(), time.process_time()
        target = worker.published + sum(1 for _ in part["feedback"])
        while worker.published < target:
            await worker.step(timeout_s=0.1)
        busy += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
    worker.close()
    return n / busy, n / cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=20000)
    p.add_argument("--bus", choices=["memory", "local"], default="memory")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rubric_path = Path(tmp) / "bench.toml"
        rubric_path.write_text(RUBRIC)
        bus: Bus
        if a.bus == "local":
            from ledger.localbus import LocalBus

            bus = LocalBus(Path(tmp) / "log.sqlite", synchronous="normal")
        else:
            bus = MemoryBus()
        rate, per_cpu = asyncio.run(run(bus, a.episodes, rubric_path))
        bus.close()
    print(
        f"rubric worker, {a.bus} bus, 11 built-in scorers: {a.episodes} episodes, "
        f"{rate:,.0f} episodes scored/s ({per_cpu:,.0f} per CPU-second of the worker process)"
    )


if __name__ == "__main__":
    main()
