"""Handing a CPU training step's freed memory back to the OS (docs/learning.md)."""

from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 128 << 10  # glibc's own starting threshold, kept fixed


def map_large_allocations() -> None:
    """Serve every allocation of 128 KiB or more from its own mapping, returned to the OS when
    freed. glibc raises this threshold each time a mapped block is freed (up to 32 MiB), after
    which a step's activations come from the heap, fragment it and stay: one 704-token step on
    SmolLM2 in 256-token micro-batches peaked 0.3 GB higher with the moving threshold
    (docs/learning.md). Affects the whole process; a no-op where there is no glibc, or where
    MALLOC_MMAP_THRESHOLD_ in the environment chose a threshold already."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def release_freed_memory() -> None:
    """Hand the step's freed activations back to the OS (glibc's malloc_trim). On the CPU a
    step's tensors come from glibc's heaps, and the learner thread's arena kept them: the
    embedded stack's process grew step after step (docs/learning.md). A no-op where there is
    no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
