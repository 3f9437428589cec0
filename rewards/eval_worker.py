"""The evaluator: evaluates every version the gateway holds in `evaluating`, and reports the
verdict (docs/versions.md, "The eval gate").

It runs as a thread of `rlgw up` (against the gateway of that process) or on its own as
`rlgw eval-worker --gateway URL`, and talks to the gateway over HTTP only
(rewards/eval_client.py). One evaluation at a time; a version's evaluation that cannot reach
the gateway is tried again on the next round. A failed round never stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from rewards.eval_client import EvalClient, EvalRequestError, GatewayEvalClient
from rewards.eval_report import EvalReport
from rewards.evaluation import EvalSettings, evaluate_on_gateway
from rewards.rubric import Rubric

log = logging.getLogger(__name__)


def line_heads(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `evaluating` versions that no other `evaluating` version descends from, in the
    listing's order (oldest first)."""
    parent = {v["id"]: v.get("parent") for v in versions}
    waiting = [v for v in versions if v.get("status") == "evaluating"]
    covered: set[str] = set()
    for v in waiting:
        seen, p = {v["id"]}, parent.get(v["id"])
        while p is not None and p not in seen:
            covered.add(p)
            seen.add(p)
            p = parent.get(p)
    return [v for v in waiting if v["id"] not in covered]


class EvalWorker:
    def __init__(self, client: EvalClient, rubrics: Sequence[Rubric], settings: EvalSettings) -> None:
        self.client, self.rubrics, self.settings = client, list(rubrics), settings
        self.reports: list[EvalReport] = []

    async def evaluate_pending(self) -> list[EvalReport]:
        """Evaluate each version now `evaluating` that heads its line and record its verdict;
        the reports. A waiting version with a waiting descendant is left: the descendant's pass
        skips it (gateway/eval_versions.py), so a learner that publishes faster than versions are
        evaluated builds no queue, and a version of another line (an injected one) waits for at
        most one evaluation per line."""
        listing = await self.client.listing()
        done = []
        for v in line_heads(listing.get("versions") or []):
            try:
                report = await evaluate_on_gateway(
                    self.client,
                    v["id"],
                    self.rubrics,
                    self.settings,
                    parent=v.get("parent") or listing.get("serving"),
                )
                result = {"passed": report.passed, "reason": report.reason, "report": report.to_dict()}
                await self.client.record(v["id"], result)
            except EvalRequestError as exc:
                log.warning("evaluation of %s not finished (tried again next round): %s", v["id"], exc)
                continue
            log.info(
                "version %s: eval %s in %.1f s (%s)", v["id"], report.verdict, report.seconds, report.reason
            )
            done.append(report)
        self.reports += done
        return done

    async def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await self.evaluate_pending()
            except Exception:  # the boundary: a bad round is logged, the next one runs
                log.exception("evaluation round failed")
            await asyncio.sleep(interval_s)


def run_eval_worker(
    gateway_url: str,
    admin_key: str | None,
    rubrics: Sequence[Rubric],
    settings: EvalSettings,
    stop: threading.Event,
    interval_s: float = 1.0,
) -> None:
    """Evaluate versions on the gateway at `gateway_url` until `stop` is set (blocking)."""

    async def main() -> None:
        client = GatewayEvalClient(gateway_url, admin_key)
        try:
            await EvalWorker(client, rubrics, settings).run(stop, interval_s)
        finally:
            await client.close()

    log.info("evaluator: %s on %s", ", ".join(r.name for r in rubrics), gateway_url)
    asyncio.run(main())
