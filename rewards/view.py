"""The typed Episode view a reward function reads: the conversation, not the wire records.

A chat client resends the whole conversation on every call, so the last turn's request plus
its reply is the conversation; earlier turns add latency, usage and metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ledger.records import Episode, Feedback, Turn


def text_of(content: Any) -> str:
    """A message's content as text: strings as they are, content parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # as the model wrote it: JSON text, possibly malformed


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool_call_id: str
    content: str


@dataclass
class EpisodeView:
    """What a reward function sees. Built once per episode; read-only by convention."""

    episode_id: str
    turns: list[Turn]
    feedback: list[Feedback] = field(default_factory=list)
    tenant: str = "default"

    @classmethod
    def of(cls, episode: Episode) -> EpisodeView:
        return cls(episode.episode_id, list(episode.turns), list(episode.feedback), episode.tenant)

    @property
    def last_turn(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    @cached_property
    def messages(self) -> list[dict[str, Any]]:
        """The whole conversation: the last request's messages, then the reply."""
        turn = self.last_turn
        if turn is None:
            return []
        out = list(turn.request.get("messages") or [])
        if turn.choices:
            reply = turn.choices[0].message
            out.append({"role": "assistant", **(reply if isinstance(reply, dict) else {})})
        return out

    @cached_property
    def final_answer(self) -> str:
        """The text of the last assistant message ('' when there is none)."""
        for m in reversed(self.messages):
            if m.get("role") == "assistant":
                return text_of(m.get("content"))
        return ""

    @cached_property
    def system_prompt(self) -> str:
        return "\n".join(text_of(m.get("content")) for m in self.messages if m.get("role") == "system")

    @cached_property
    def user_messages(self) -> list[str]:
        return [text_of(m.get("content")) for m in self.messages if m.get("role") == "user"]

    @cached_property
    def tool_calls(self) -> list[ToolCall]:
        out = []
        for m in self.messages:
            if m.get("role") != "assistant":
                continue
            for c in m.get("tool_calls") or []:
                c = c if isinstance(c, dict) else {}
                fn: dict[str, Any] = c.get("function") or {}
                fn = fn if isinstance(fn, dict) else {}
                args = fn.get("arguments")
                out.append(
                    ToolCall(
                        str(c.get("id", "")), str(fn.get("name", "")), args if isinstance(args, str) else ""
                    )
                )
        return out

    @cached_property
    def tool_results(self) -> list[ToolResult]:
        return [
            ToolResult(str(m.get("tool_call_id", "")), text_of(m.get("content")))
            for m in self.messages
            if m.get("role") == "tool"
        ]

    @cached_property
    def tools(self) -> list[dict[str, Any]]:
        """The tool definitions offered in the last request."""
        turn = self.last_turn
        return list(turn.request.get("tools") or []) if turn else []

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """Every turn's metadata merged; later turns win."""
        out: dict[str, Any] = {}
        for t in self.turns:
            out.update(t.metadata)
        return out

    @property
    def version(self) -> str | None:
        """The model version that served the last turn."""
        return self.last_turn.version if self.last_turn else None

    @property
    def model(self) -> str | None:
        return self.last_turn.model if self.last_turn else None

    @cached_property
    def task(self) -> str | None:
        return next((t.task for t in self.turns if t.task), None) or self.metadata.get("task")

    @property
    def latency_ms(self) -> float:
        return sum(t.latency_ms for t in self.turns)

    @property
    def completion_tokens(self) -> int:
        return sum(int((t.usage or {}).get("completion_tokens") or 0) for t in self.turns)
