"""Records the bus refused for good, kept whole on disk, and their replay.

A record over Kafka's size limit (or one the broker calls invalid) would block the recorder's
spool forever if it were retried like an outage. The recorder keeps it here instead:
`<spool dir>/rejected/<topic>.jsonl`, one record per line exactly as it was serialised, fsynced,
and announces it on the dead-letter topic. `rlgw replay-rejected` sends the kept records again
(after the limit was raised, say): the file is renamed first, so a running gateway appends new
rejections to a fresh one, and whatever the bus still refuses is kept again. Writers and the
replay take an exclusive lock on the file, so a replay never reads a half-written record.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ledger.bus import Bus, BusRejected
from ledger.records import TOPIC_DEAD_LETTERS, DeadLetter, Encoded, RecordError, parse_record

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
PAYLOAD_PREVIEW = 1024  # bytes of a rejected record copied into its dead letter
REPLAYING = ".replaying"


def keep(directory: Path, topic: str, values: Sequence[bytes], *, fsync: bool = True) -> Path:
    """Append records the bus will never take to `<directory>/<topic>.jsonl`; returns that file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{topic}{SUFFIX}"
    with open(path, "ab") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.write(b"".join(v.rstrip(b"\n") + b"\n" for v in values))
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    return path


@dataclass
class Replayed:
    sent: dict[str, int] = field(default_factory=dict)  # topic -> records the bus took
    refused: dict[str, list[str]] = field(default_factory=dict)  # topic -> why, per record kept again


def replay(directory: Path, bus: Bus, *, batch: int = 100) -> Replayed:
    """Send every kept record to its topic again; those still refused are kept again.
    A replay cut short by an outage (BusUnavailable) leaves the rest in a `.replaying` file,
    which the next replay picks up first."""
    out = Replayed()
    for path in sorted(directory.glob(f"*{SUFFIX}{REPLAYING}")):  # a replay cut short: the rest first
        _replay_file(path, bus, batch, out)
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        moved = path.with_name(path.name + REPLAYING)
        os.replace(path, moved)  # new rejections from a running gateway go to a fresh file
        _replay_file(moved, bus, batch, out)
    return out


def _replay_file(path: Path, bus: Bus, batch: int, out: Replayed) -> None:
    topic = path.name.removesuffix(SUFFIX + REPLAYING)
    with open(path, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # a writer that opened it before the rename is done
        lines = [line for line in fh.read().split(b"\n") if line]
    for start in range(0, len(lines), batch):
        chunk = lines[start : start + batch]
        try:
            bus.publish(topic, [(_key(line), line) for line in chunk])
            refused: dict[int, str] = {}
        except BusRejected as exc:
            refused = exc.rejected
        if refused:
            keep(path.parent, topic, [chunk[i] for i in sorted(refused)])
            out.refused.setdefault(topic, []).extend(refused[i] for i in sorted(refused))
        out.sent[topic] = out.sent.get(topic, 0) + len(chunk) - len(refused)
        _rewrite(path, lines[start + batch :])  # durable progress: an outage later re-sends only the rest
    path.unlink()


def _key(line: bytes) -> str:
    try:
        return parse_record(line).key
    except RecordError:
        return ""


def _rewrite(path: Path, lines: list[bytes]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"".join(line + b"\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def dead_letters(
    topic: str, rejected: Sequence[tuple[tuple[str, str, bytes], str]], kept: str
) -> list[Encoded]:
    """Log each record of `topic` the bus refused for good (kept in `kept`, if anywhere) and
    announce it with a dead letter: reason, size, where it is kept, its first bytes. Never a
    letter about a letter."""
    letters = []
    for (_t, key, value), why in rejected:
        log.error(
            "the bus rejected a %d-byte record for %s (key %s) for good: %s; kept in %s",
            len(value),
            topic,
            key,
            why,
            kept or "nothing (no spool): only its dead letter",
        )
        if topic.endswith(TOPIC_DEAD_LETTERS):
            continue
        letter = DeadLetter(
            topic=topic,
            reason=f"rejected by the bus: {why}",
            payload=value[:PAYLOAD_PREVIEW].decode("utf-8", "replace"),
            size=len(value),
            kept_in=kept,
        )
        letters.append(Encoded(key, letter.to_bytes()))
    return letters
