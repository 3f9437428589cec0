"""Implicit feedback: what the user's next message says about the answer before it.

wrong      the user says so ("that's wrong", "no, ...", "not what I asked")
repeat     the user asks again: same words, or mostly the same (a rephrase)
moves_on   anything else: the answer was taken
"""

from __future__ import annotations

import re
from typing import Literal

from rewards.view import EpisodeView, text_of

Signal = Literal["wrong", "repeat", "moves_on"]

WRONG = re.compile(
    r"(\b(that|this|it|you)('?s| is| are|'re)?\s+(wrong|incorrect|not (right|correct|true))\b"
    r"|\bnot what i (asked|meant|wanted)\b|\b(wrong|incorrect) answer\b|^\s*no\b[,.!]?"
    r"|\bdoes(n'?t| not) work\b|\btry again\b)",
    re.I,
)
_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def classify_next_turn(previous_user: str, next_user: str, repeat_threshold: float = 0.6) -> Signal:
    if WRONG.search(next_user):
        return "wrong"
    a, b = _words(previous_user), _words(next_user)
    if a and b and len(a & b) / len(a | b) >= repeat_threshold:
        return "repeat"
    return "moves_on"


def next_turn_signals(episode: EpisodeView, repeat_threshold: float = 0.6) -> list[Signal]:
    """One signal per assistant answer that a later user message follows."""
    out: list[Signal] = []
    last_user: str | None = None
    answered = False
    for m in episode.messages:
        role = m.get("role")
        if role == "user":
            text = text_of(m.get("content"))
            if answered and last_user is not None:
                out.append(classify_next_turn(last_user, text, repeat_threshold))
            last_user, answered = text, False
        elif role == "assistant" and text_of(m.get("content")):
            answered = True
    return out


def implicit_feedback(
    episode: EpisodeView, *, repeat_threshold: float = 0.6, repeat: float = 0.0, wrong: float = 0.0
) -> float | None:
    """Mean over answers: 1 when the user moves on, `repeat` / `wrong` otherwise (None: no next turn)."""
    signals = next_turn_signals(episode, repeat_threshold)
    if not signals:
        return None
    value = {"moves_on": 1.0, "repeat": repeat, "wrong": wrong}
    return sum(value[s] for s in signals) / len(signals)
