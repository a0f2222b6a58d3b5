"""Handing freed heap memory back to the kernel (glibc's malloc_trim).

glibc keeps what a thread frees in that thread's arena for reuse; memory
freed by threads that end (a camera stack's encoder, sensor and poll threads,
gone at every camera restart) stays counted in RSS, scattered over up to
8 arenas per core. malloc_trim(0) releases the free pages of every arena.
Measured here: 200 restarts of the picamera2 stand-in grew RSS by 65 MB
without it and stayed flat with it (tests/test_recovery.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util

try:
    _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc: nothing to trim this way
    _trim = None


def release_freed_memory() -> None:
    """Return free heap pages to the kernel; takes milliseconds, so not on the event loop."""
    if _trim is not None:
        _trim(0)
