"""The spool's files besides its segments' frames: the drain cursor, recovery on open, metrics.

See ledger/spool.py for the layout. The cursor file holds `<segment> <offset>`, fixed width.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("ledger.spool")

HEADER = struct.Struct("<IIHH")  # payload length, crc32 of payload, topic length, key length


class SpoolMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.bytes = Gauge("rlgw_spool_bytes", "Bytes waiting in the disk spool", registry=registry)
        self.records = Gauge("rlgw_spool_records", "Records waiting in the disk spool", registry=registry)
        self.alarm = Gauge("rlgw_spool_alarm", "1 while the spool is past its alarm size", registry=registry)
        self.appended = Counter("rlgw_spool_appended", "Records written to the spool", registry=registry)
        self.drained = Counter("rlgw_spool_drained", "Records drained from the spool", registry=registry)
        self.write_errors = Counter(
            "rlgw_spool_write_errors",
            "Spool writes the disk refused (full, read-only or failing); the records were kept",
            registry=registry,
        )
        self.rejected = Counter(
            "rlgw_spool_rejected",
            "Records the bus rejected for good, kept in <spool>/rejected",
            registry=registry,
        )


def load_cursor(directory: Path, segments: list[int]) -> tuple[int, int]:
    """The drain position stored in `<directory>/cursor`, else the oldest segment's start."""
    try:
        seg, off = (directory / "cursor").read_text().split()
        return int(seg), int(off)
    except (FileNotFoundError, ValueError):
        return (segments[0] if segments else 1), 0


def store_cursor(fd: int, segment: int, offset: int, *, fsync: bool) -> None:
    """Overwritten in place, fixed width (no new file, so no metadata for the disk's journal
    at every drain; one sector, so never torn), fsynced only when asked (`always`): a killed
    process leaves it in the page cache, and a cursor lost to a power cut replays records, which
    readers dedupe."""
    os.pwrite(fd, f"{segment:012d} {offset:020d}\n".encode(), 0)
    if fsync:
        os.fsync(fd)


def recover(
    segments: list[int], seg_path: Callable[[int], Path], read_seg: int, read_off: int
) -> tuple[int, int]:
    """Count the records and bytes left to drain; cut a torn or corrupt tail off the last segments."""
    records = size = 0
    for seg in segments:
        if seg < read_seg:
            seg_path(seg).unlink()  # drained before a crash, not yet deleted
            continue
        path = seg_path(seg)
        data = path.read_bytes()
        off = good = read_off if seg == read_seg else 0
        while off + HEADER.size <= len(data):
            n, crc, _t, _k = HEADER.unpack_from(data, off)
            payload = data[off + HEADER.size : off + HEADER.size + n]
            if len(payload) < n or zlib.crc32(payload) != crc:
                break
            off += HEADER.size + n
            good = off
            records += 1
        start = read_off if seg == read_seg else 0
        size += good - start
        if good < len(data):
            log.warning("spool segment %s: dropping a torn tail of %d bytes", path, len(data) - good)
            with open(path, "r+b") as fh:
                fh.truncate(good)
    return records, size
