"""Reading the upstream's reply for the record, and trimming it to what the client asked for.

The gateway always asks the upstream for token ids and behaviour log-probs; `Wants` says what
the client itself asked for, and `strip_*` removes the rest. `StreamTap` accumulates a streamed
reply chunk by chunk (content, tool-call deltas, token ids, log-probs) as it flows past.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.plain import plain
from ledger.records import TurnChoice


@dataclass(frozen=True, slots=True)
class Wants:
    logprobs: bool
    token_ids: bool
    usage: bool  # streaming only: stream_options.include_usage


def token_logprobs(lp: Any) -> list[float] | None:
    if not isinstance(lp, dict):
        return None
    content = lp.get("content")
    if not isinstance(content, list):
        return None
    return [c["logprob"] for c in content]


Choice = dict[str, Any]  # a ledger.records.TurnChoice as plain data (ledger.plain)


def choice(
    index: int,
    message: dict[str, Any],
    finish_reason: str | None,
    token_ids: list[int] | None,
    logprobs: list[float] | None,
) -> Choice:
    return plain(
        TurnChoice,
        index=index,
        message=message,
        finish_reason=finish_reason,
        token_ids=token_ids,
        logprobs=logprobs,
    )


def choices_from_reply(data: dict[str, Any]) -> list[Choice]:
    return [
        choice(
            ch.get("index", 0),
            ch.get("message") or {},
            ch.get("finish_reason"),
            ch.get("token_ids"),
            token_logprobs(ch.get("logprobs")),
        )
        for ch in data.get("choices") or []
    ]


def strip_reply(data: dict[str, Any], wants: Wants) -> None:
    """Remove from a non-streamed reply what only the gateway asked for (in place)."""
    if not wants.token_ids:
        data.pop("prompt_token_ids", None)
    for ch in data.get("choices") or []:
        if not wants.token_ids:
            ch.pop("token_ids", None)
        if not wants.logprobs:
            ch["logprobs"] = None


def tokens_complete(prompt_ids: list[int] | None, choices: list[Choice]) -> bool:
    if not prompt_ids or not choices:
        return False
    for c in choices:
        ids, lps = c["token_ids"], c["logprobs"]
        if ids is None or lps is None or len(ids) != len(lps):
            return False
    return True


@dataclass
class _Acc:
    content: list[str] = field(default_factory=list)
    role: str = "assistant"
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    has_ids: bool = False
    has_lp: bool = False


class StreamTap:
    """Accumulates streamed chunks into the turn's choices, prompt ids and usage."""

    def __init__(self) -> None:
        self._acc: dict[int, _Acc] = {}
        self.prompt_token_ids: list[int] | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any], wants: Wants) -> bool:
        """Take one chunk; trim it for the client in place. Returns False to drop it."""
        if "prompt_token_ids" in chunk:
            self.prompt_token_ids = chunk["prompt_token_ids"]
            if not wants.token_ids:
                del chunk["prompt_token_ids"]
        choices = chunk.get("choices") or []
        for ch in choices:
            acc = self._acc.setdefault(ch.get("index", 0), _Acc())
            delta = ch.get("delta") or {}
            if delta.get("role"):
                acc.role = delta["role"]
            if delta.get("content"):
                acc.content.append(delta["content"])
            for tc in delta.get("tool_calls") or []:
                slot = acc.tool_calls.setdefault(
                    tc.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            if ch.get("finish_reason"):
                acc.finish_reason = ch["finish_reason"]
            ids = ch.get("token_ids")
            if ids is not None:
                acc.has_ids = True
                acc.token_ids.extend(ids)
                if not wants.token_ids:
                    del ch["token_ids"]
            lp = token_logprobs(ch.get("logprobs"))
            if lp is not None:
                acc.has_lp = True
                acc.logprobs.extend(lp)
            if not wants.logprobs:
                ch.pop("logprobs", None)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
            if not choices and not wants.usage:
                return False
            if not wants.usage:
                chunk["usage"] = None
        return True

    def choices(self) -> list[Choice]:
        out = []
        for index in sorted(self._acc):
            acc = self._acc[index]
            message: dict[str, Any] = {"role": acc.role, "content": "".join(acc.content) or None}
            if acc.tool_calls:
                message["tool_calls"] = [acc.tool_calls[k] for k in sorted(acc.tool_calls)]
            out.append(
                choice(
                    index,
                    message,
                    acc.finish_reason,
                    acc.token_ids if acc.has_ids else None,
                    acc.logprobs if acc.has_lp else None,
                )
            )
        return out
