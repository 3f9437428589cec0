"""The eval gate in a version's life: loaded → evaluating → eval_passed (queued for its canary)
or eval_failed (never canaried), each a version event like every registry change
(gateway/version_state.py), so a gateway that restarts knows which versions passed.

The evaluation itself runs outside the gateway (rewards/evaluation.py, by `rlgw up`'s
evaluator or an `rlgw eval-worker`): it asks for evaluation answers pinned to a version
(`VersionRegistry.eval_route`) and reports its verdict here (`record_eval`): docs/versions.md,
"The eval gate".
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest
from gateway.full_versions import FullWeightVersions
from gateway.lineage import descends
from gateway.version_state import Version

# a version in these states has its adapter in the replicas: an evaluation may ask it
EVALUABLE = ("evaluating", "loaded", "canary", "serving", "retired", "rolled_back", "eval_failed")


class EvalVersions(FullWeightVersions):
    @property
    def gated(self) -> bool:
        return bool(self.cfg.eval_gate)

    def start_eval(self, v: Version) -> None:
        """A loaded version waits for its evaluation before any canary."""
        with self._changing:
            self._commit(self._new(v, "evaluating", "evaluating", "held-out evaluation against its parent"))

    def record_eval(self, vid: str, passed: bool, reason: str, figures: dict[str, Any]) -> Version:
        """The evaluation's verdict: passed, the version queues for its canary (`next_canary`
        follows) and its ancestors still waiting for their evaluation are skipped (a newer
        version of their line passed: evaluating them would only build a queue); failed, it and
        every version descending from it that waits are retired."""
        with self._changing:
            v = self.get(vid)
            if v.status != "evaluating":
                raise InvalidRequest(
                    f"version {vid} is {v.status}, not evaluating", param="version", code="not_evaluating"
                )
            if passed:
                skipped = [
                    self._new(a, "skipped", "retired", f"superseded by {vid} before its evaluation")
                    for a in self.versions.values()
                    if a.status == "evaluating" and descends(self.versions, vid, a.id)
                ]
                self._commit(self._new(v, "eval_passed", "loaded", reason, figures), *skipped)
                return v
            heirs = [
                self._new(
                    d, "retired_with_ancestor", "retired", f"descends from {vid}, which failed its eval"
                )
                for d in self.versions.values()
                if d.status in ("registered", "loaded", "evaluating") and descends(self.versions, d.id, vid)
            ]
            self._commit(self._new(v, "eval_failed", "eval_failed", reason, figures), *heirs)
            return v
