"""Optional PII scrubbing of recorded message contents (`ledger.scrub_pii`).

Emails, phone numbers and card numbers (13-19 digits that pass the Luhn check) in the text of
a turn's request messages and choices, and of demonstration Feedback, become typed placeholders
(`<EMAIL>`, `<PHONE>`, `<CARD>`) before the record leaves the gateway. The reply the client
gets is untouched. Token ids would still spell the original text, so a scrubbed turn drops
them and its log-probs (`tokens_recorded=False`: rubrics still score it, the learner skips it).
Pattern-based: it catches the common shapes, not names or addresses.
"""

from __future__ import annotations

import re
from typing import Any

from ledger.plain import plain
from ledger.records import Feedback, TurnChoice

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){6,13}(?![ .-]?\d)(?!\w)"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group())
    return "<CARD>" if 13 <= len(digits) <= 19 and _luhn(digits) else m.group()


def _phone(m: re.Match[str]) -> str:
    return "<PHONE>" if 7 <= len(re.sub(r"\D", "", m.group())) <= 15 else m.group()


def scrub_text(text: str) -> str:
    text = EMAIL.sub("<EMAIL>", text)
    text = CARD.sub(_card, text)
    return PHONE.sub(_phone, text)


def _scrub(value: Any) -> Any:
    """Strings anywhere in a message (content parts, tool-call arguments) are scrubbed."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: v if k == "role" else _scrub(v) for k, v in value.items()}
    return value


def scrub_turn(turn: dict[str, Any]) -> dict[str, Any]:
    """A turn as plain data (`ledger.plain`), scrubbed; the given dict is left as it was."""
    request = dict(turn["request"])
    for field in ("messages", "tools"):
        if field in request:
            request[field] = _scrub(request[field])
    choices = [
        plain(TurnChoice, index=c["index"], message=_scrub(c["message"]), finish_reason=c["finish_reason"])
        for c in turn["choices"]
    ]
    return turn | {
        "request": request,
        "choices": choices,
        "prompt_token_ids": None,
        "tokens_recorded": False,
        "metadata": _scrub(turn["metadata"]),
    }


def scrub_feedback(feedback: Feedback) -> Feedback:
    return feedback.model_copy(update={"value": _scrub(feedback.value)})
