"""What an evaluation found: a row per rubric and figure, a verdict, and the table `rlgw eval`
prints. The report travels as a plain dict (`to_dict`) in the gate's version event
(`eval_passed` / `eval_failed`, docs/versions.md), and comes back with `from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rewards.paired import Paired

Verdict = Literal["pass", "worse", "no_data"]


@dataclass(frozen=True)
class EvalRow:
    rubric: str
    metric: str  # "reward" (the rubric's weighted total) or one of its functions
    weight: float | None  # the function's weight (None: the total)
    n: int  # prompts both sides were scored on
    parent: float
    version: float
    diff: float  # version − parent, paired by prompt
    low: float | None  # the interval of the difference (None below two pairs)
    high: float | None
    worse: bool  # a reward confidently below the parent's by more than the margin

    @classmethod
    def of(
        cls, rubric: str, metric: str, weight: float | None, cmp: Paired, margin: float, reward: str
    ) -> EvalRow:
        w = None if metric == reward else weight
        worse = metric == reward and cmp.worse(margin)
        return cls(rubric, metric, w, cmp.n, cmp.parent, cmp.version, cmp.diff, cmp.low, cmp.high, worse)


@dataclass
class EvalReport:
    version: str
    parent: str
    verdict: Verdict
    reason: str
    rows: list[EvalRow] = field(default_factory=list)
    prompts: int = 0  # prompts asked
    failed: list[str] = field(default_factory=list)  # prompts a side could not answer
    version_failed: int = 0  # evaluation requests the version could not answer
    parent_failed: int = 0
    margin: float = 0.0
    confidence: float = 0.9
    seconds: float = 0.0

    @classmethod
    def decide(cls, version: str, parent: str, rows: list[EvalRow], **kw: Any) -> EvalReport:
        rewards = [r for r in rows if r.metric == "reward"]
        worse = [r for r in rewards if r.worse]
        prompts, broken, theirs = (
            kw.get("prompts", 0),
            kw.get("version_failed", 0),
            kw.get("parent_failed", 0),
        )
        verdict: Verdict
        if broken > theirs and broken >= max(1, prompts / 2):  # it cannot answer: a broken version
            verdict = "worse"
            reason = f"{version} failed {broken} of {prompts} evaluation requests ({parent}: {theirs})"
        elif worse:
            verdict = "worse"
            reason = "; ".join(
                f"{r.rubric}: held-out reward {r.version:.3f} against {r.parent:.3f} on {parent} "
                f"(difference {r.diff:+.3f}, interval up to {r.high:+.3f}, n={r.n})"
                for r in worse
            )
        elif any(r.n >= 2 for r in rewards):
            verdict = "pass"
            reason = "; ".join(
                f"{r.rubric}: {r.version:.3f} against {r.parent:.3f} (n={r.n})" for r in rewards
            )
        else:
            verdict, reason = "no_data", f"no rubric scored two held-out prompts ({prompts} asked)"
        return cls(version, parent, verdict, reason, rows, **kw)

    @property
    def passed(self) -> bool:
        return self.verdict != "worse"

    def reward(self, rubric: str) -> EvalRow | None:
        return next((r for r in self.rows if r.rubric == rubric and r.metric == "reward"), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 2)
        out["failed"] = self.failed[:20]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        rows = [EvalRow(**r) for r in d.get("rows") or []]
        names = ("prompts", "failed", "version_failed", "parent_failed", "margin", "confidence", "seconds")
        keep = {k: d[k] for k in names if k in d}
        return cls(d["version"], d["parent"], d["verdict"], d.get("reason", ""), rows, **keep)

    def table(self) -> str:
        """Per rubric and figure: parent vs version, the difference with its interval."""
        head = f"{'rubric':<16} {'metric':<20} {'n':>4} {self.parent[:12]:>12} {self.version[:12]:>12}"
        lines = [
            f"{self.version} against {self.parent}: {len(self.failed)} of {self.prompts} prompts "
            f"failed, {self.confidence:.0%} intervals, margin {self.margin:g}, {self.seconds:.1f} s",
            head + f" {'difference':>10}  interval",
        ]
        for r in self.rows:
            interval = "-" if r.low is None or r.high is None else f"[{r.low:+.3f}, {r.high:+.3f}]"
            flag = "  WORSE" if r.worse else ""
            lines.append(
                f"{r.rubric[:16]:<16} {r.metric[:20]:<20} {r.n:>4} {r.parent:>12.3f} {r.version:>12.3f} "
                f"{r.diff:>+10.3f}  {interval}{flag}"
            )
        lines.append(f"verdict: {self.verdict} — {self.reason}")
        return "\n".join(lines)
