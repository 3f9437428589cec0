"""The disk spool: where records wait, in order, while the bus cannot take them.

An append-only log of segment files `<data_dir>/spool/<seq>.seg`. Each entry is a frame:

    <u32 payload length> <u32 crc32 of payload> <u16 topic length> <u16 key length>
    payload = topic bytes + key bytes + value bytes

`read()` hands out the oldest entries with a cursor; `commit(cursor)` (after the bus took
them) moves the drain position, stored in `<dir>/cursor`, and deletes drained segments. A
crash between publish and commit replays those entries: records carry ids, so the readers
deduplicate. A torn frame at the end of the last segment (a crash mid-append) is cut off on
open. A restarted process therefore drains what its predecessor left.

fsync policy: `always` fsyncs every record, `batch` once per `append()` call (the recorder
spills in batches: a group commit), `never` leaves it to the OS. The drain cursor is fsynced
only with `always` (a lost cursor replays, never loses). Past `alarm_bytes` a warning is logged once
per crossing and the `rlgw_spool_alarm` gauge reads 1.

A write the disk refuses (ENOSPC, EIO, EROFS) raises `OSError` and leaves the segment as it
was: the partial frames are cut off again (or, when even that fails, the next append starts a
new segment, and a reader skips a torn tail). The caller keeps those records and retries
(ledger/recorder.py). Draining never fails on the disk: a cursor or segment file that cannot be
written or removed is retried at the next commit (a crash meanwhile replays a few records, which
readers dedupe by id).

Records the bus rejects for good (a Kafka size limit, say) are not spooled, which would retry
them forever and hold back every newer record: `keep_rejected()` keeps them in
`<dir>/rejected/` (ledger/rejected.py), where `rlgw replay-rejected` finds them.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry

from ledger import rejected
from ledger.spool_files import HEADER as _HEADER
from ledger.spool_files import SpoolMetrics, load_cursor, recover, store_cursor

log = logging.getLogger(__name__)

RESET_AT_BYTES = 1 << 20  # a drained segment is started afresh past this size (not at every drain)
SpoolItem = tuple[str, str, bytes]  # (topic, key, value)


class SpoolBusy(RuntimeError):
    """Another process holds this spool directory (one spool per process and data dir)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    segment: int
    offset: int
    count: int  # entries read up to here since the last commit


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        fsync: Literal["always", "batch", "never"] = "batch",
        alarm_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 64 * 1024 * 1024,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._owner = open(self.dir / "lock", "a")  # noqa: SIM115 (held while open)
        try:
            fcntl.flock(self._owner.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._owner.close()
            raise SpoolBusy(f"spool {self.dir} is in use by another process") from exc
        self._fsync = fsync
        self._alarm_bytes = alarm_bytes
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self.metrics = SpoolMetrics(registry)
        self._alarmed = False
        self._roll_next = False  # a failed append left a torn tail: the next one starts a segment
        self._cursor_fd: int | None = None
        self._read_seg, self._read_off = self._load_cursor()
        self._records, self._bytes = self._recover()
        segs = self._segments()
        self._write_seg = segs[-1] if segs else max(self._read_seg, 1)
        self._fh = self._open_segment(self._write_seg)
        self._update_gauges()

    # -- writing -------------------------------------------------------------------------
    def append(self, items: Sequence[SpoolItem]) -> None:
        """Append records durably (per the fsync policy), in order."""
        if not items:
            return
        frames = []
        for topic, key, value in items:
            payload = topic.encode() + key.encode() + value
            t, k = len(topic.encode()), len(key.encode())
            frames.append(_HEADER.pack(len(payload), zlib.crc32(payload), t, k) + payload)
        with self._lock:
            if self._roll_next:
                self._roll()
            start = self._fh.tell()
            try:
                if self._fsync == "always":
                    for frame in frames:
                        self._write(frame)
                        os.fsync(self._fh.fileno())
                else:
                    self._write(b"".join(frames))
                    if self._fsync == "batch":
                        os.fsync(self._fh.fileno())
            except OSError:
                self.metrics.write_errors.inc()
                self._cut_back(start)
                raise
            self._records += len(frames)
            self._bytes += sum(len(f) for f in frames)
            if self._fh.tell() >= self._segment_bytes:
                self._roll()
        self.metrics.appended.inc(len(frames))
        self._update_gauges()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # an unbuffered file may take part of a write
            n = self._fh.write(view)
            view = view[n or 0 :]

    def _cut_back(self, start: int) -> None:
        """Undo a failed append: nothing of it may stay for a later append to follow."""
        try:
            os.ftruncate(self._fh.fileno(), start)
            self._fh.seek(start)
        except OSError as exc:
            log.warning(
                "spool: could not cut a failed append off %s (%s); starting a new segment", self._fh.name, exc
            )
            self._roll_next = True

    def keep_rejected(self, topic: str, values: Sequence[bytes]) -> Path:
        """Keep records the bus will never take (ledger/rejected.py); returns their file."""
        path = rejected.keep(self.dir / "rejected", topic, values, fsync=self._fsync != "never")
        self.metrics.rejected.inc(len(values))
        return path

    def _roll(self) -> None:
        """Start the next segment (kept on the current one while the disk refuses a new file)."""
        try:
            fh = self._open_segment(self._write_seg + 1)
        except OSError as exc:
            log.warning("spool: cannot start a new segment (%s); still appending to %s", exc, self._fh.name)
            return
        self._fh.close()
        self._fh = fh
        self._write_seg += 1
        self._roll_next = False

    def _open_segment(self, seg: int) -> io.FileIO:
        """Unbuffered: a failed write leaves nothing in a buffer to be written later."""
        return io.FileIO(self._seg_path(seg), "ab")

    # -- draining ------------------------------------------------------------------------
    def read(self, max_items: int = 1000) -> tuple[list[SpoolItem], Cursor]:
        """The oldest entries not yet committed, and the cursor just past them."""
        with self._lock:
            seg, off = self._read_seg, self._read_off
            out: list[SpoolItem] = []
            while len(out) < max_items and seg <= self._write_seg:  # a torn tail ends a segment
                off = self._read_segment(seg, off, max_items - len(out), out)
                if len(out) < max_items and seg < self._write_seg:
                    seg, off = seg + 1, 0
                else:
                    break
            return out, Cursor(seg, off, len(out))

    def _read_segment(self, seg: int, off: int, limit: int, out: list[SpoolItem]) -> int:
        path = self._seg_path(seg)
        if not path.exists():
            return off
        with open(path, "rb") as fh:
            fh.seek(off)
            while limit > 0:
                header = fh.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                n, _crc, t, k = _HEADER.unpack(header)
                payload = fh.read(n)
                if len(payload) < n:
                    break
                out.append((payload[:t].decode(), payload[t : t + k].decode(), payload[t + k :]))
                off += _HEADER.size + n
                limit -= 1
        return off

    def commit(self, cursor: Cursor) -> None:
        """The entries up to `cursor` are on the bus: never hand them out again. Never raises on
        the disk: what cannot be written now is written at the next commit."""
        with self._lock:
            freed = 0
            for seg in range(self._read_seg, cursor.segment):
                path = self._seg_path(seg)
                try:
                    freed += path.stat().st_size - (self._read_off if seg == self._read_seg else 0)
                except OSError:
                    pass
            if cursor.segment == self._read_seg:
                freed += cursor.offset - self._read_off
            else:
                freed += cursor.offset
            self._read_seg, self._read_off = cursor.segment, cursor.offset
            self._records -= cursor.count
            self._bytes -= freed
            try:
                self._remove_drained()
                drained = self._records == 0 and self._read_seg == self._write_seg
                if drained and self._read_off >= RESET_AT_BYTES:
                    self._reset_current()
                self._store_cursor()
            except OSError as exc:
                self.metrics.write_errors.inc()
                log.warning("spool: cannot store the drain position (%s); retrying at the next commit", exc)
        self.metrics.drained.inc(cursor.count)
        self._update_gauges()

    def _remove_drained(self) -> None:
        for seg in self._segments():
            if seg < self._read_seg:
                self._seg_path(seg).unlink(missing_ok=True)

    def _reset_current(self) -> None:
        """Everything is drained: start the current segment afresh so it does not grow forever."""
        fh = self._open_segment(self._write_seg + 1)
        self._fh.close()
        self._seg_path(self._write_seg).unlink(missing_ok=True)
        self._fh = fh
        self._write_seg += 1
        self._read_seg, self._read_off = self._write_seg, 0
        self._roll_next = False

    @property
    def records(self) -> int:
        return self._records

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._fh.close()
            if self._cursor_fd is not None:
                os.close(self._cursor_fd)
            self._owner.close()  # releases the lock

    # -- files ---------------------------------------------------------------------------
    def _seg_path(self, seg: int) -> Path:
        return self.dir / f"{seg:012d}.seg"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())

    def _load_cursor(self) -> tuple[int, int]:
        return load_cursor(self.dir, self._segments())

    def _store_cursor(self) -> None:
        if self._cursor_fd is None:
            self._cursor_fd = os.open(self.dir / "cursor", os.O_RDWR | os.O_CREAT, 0o644)
        store_cursor(self._cursor_fd, self._read_seg, self._read_off, fsync=self._fsync == "always")

    def _recover(self) -> tuple[int, int]:
        return recover(self._segments(), self._seg_path, self._read_seg, self._read_off)

    def _update_gauges(self) -> None:
        self.metrics.bytes.set(self._bytes)
        self.metrics.records.set(self._records)
        over = self._bytes >= self._alarm_bytes
        if over and not self._alarmed:
            log.warning(
                "ledger spool holds %d bytes (%d records), past the alarm at %d: the bus is not keeping up",
                self._bytes,
                self._records,
                self._alarm_bytes,
            )
        elif not over and self._alarmed:
            log.info("ledger spool back under its alarm size (%d bytes)", self._bytes)
        self._alarmed = over
        self.metrics.alarm.set(1 if over else 0)
