"""Handing a CPU training step's freed memory back to the OS (docs/learning.md)."""

from __future__ import annotations

import ctypes


def release_freed_memory() -> None:
    """Hand the step's freed activations back to the OS (glibc's malloc_trim). On the CPU a
    step's tensors come from glibc's heaps, and the learner thread's arena kept them: the
    embedded stack's process grew step after step (docs/learning.md). A no-op where there is
    no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
