"""The gateway's side of "nothing acknowledged is lost": refuse what the ledger cannot keep, and
(with `ledger.ack = "durable"`) answer only once the records of a reply are on disk."""

from __future__ import annotations

from gateway.errors import LedgerUnavailable
from ledger.recorder import Recorder

NOT_DURABLE = "the ledger's disk did not take this record in time; it may still be recorded"


def refuse_if_full(recorder: Recorder) -> None:
    """Before serving: a 503 while the ledger's disk refuses writes and memory is full (or, with
    durable acks, while the disk refuses writes at all)."""
    if not recorder.accepting:
        raise LedgerUnavailable(
            "the ledger cannot keep records right now (its disk refuses writes); try again later",
            code="ledger_unavailable",
        )


async def made_durable(recorder: Recorder) -> None:
    """After recording: with durable acks, wait for the spool's group commit (503 on timeout)."""
    if recorder.durable_acks and not await recorder.durable():
        raise LedgerUnavailable(NOT_DURABLE, code="ledger_unavailable")
