"""The frame ring's record layout, shared by the compiled ring
(ext/rpistream/core/_ring.pyx over ring.h) and its twin (_ring_py.py)."""

from __future__ import annotations

import struct

# Record header (see ext/rpistream/core/ring.h): length, flags, capture_ns, pts.
HEADER = struct.Struct("<IIqq")
HEADER_SIZE = HEADER.size
WRAP = 0xFFFFFFFF
KEYFRAME = 1
# Smallest useful ring: a few small records. Real rings hold several keyframes.
MIN_CAPACITY = 4096


def record_size(payload: int) -> int:
    return (HEADER_SIZE + payload + 7) & ~7
