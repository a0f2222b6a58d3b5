"""IVF, the plain container libvpx and FFmpeg write VP8 into.

A 32-byte file header (signature "DKIF", version, header length, FourCC,
width, height, time base denominator and numerator, frame count), then for
each frame a 12-byte header (frame size, 64-bit pts in time-base units) and
the frame. All little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

from rpistream.core import vp8

SIGNATURE = b"DKIF"
FILE_HEADER = struct.Struct("<4sHH4sHHIII4x")
FRAME_HEADER = struct.Struct("<IQ")
VP8_FOURCC = b"VP80"


@dataclass(frozen=True)
class IvfFrame:
    offset: int  # of the frame data, past its header
    size: int
    pts: int  # in the file's time base
    keyframe: bool


@dataclass(frozen=True)
class IvfIndex:
    fourcc: bytes
    width: int
    height: int
    time_base: Fraction  # seconds per pts unit
    frames: list[IvfFrame]


def index(data) -> IvfIndex:
    """Parse an IVF file held in `data` (bytes or mmap); ValueError if it is not one."""
    if len(data) < FILE_HEADER.size or data[:4] != SIGNATURE:
        raise ValueError(f"not an IVF file: it does not start with {SIGNATURE!r}")
    (_, _, header_size, fourcc, width, height, rate, scale,
     _) = FILE_HEADER.unpack_from(data, 0)
    if rate == 0 or scale == 0:
        raise ValueError(f"IVF header has a zero time base ({scale}/{rate})")
    frames = []
    offset = max(header_size, FILE_HEADER.size)
    while offset + FRAME_HEADER.size <= len(data):
        size, pts = FRAME_HEADER.unpack_from(data, offset)
        offset += FRAME_HEADER.size
        if size == 0 or offset + size > len(data):
            break  # truncated last frame, as left by a recording cut short
        frames.append(IvfFrame(offset, size, pts, fourcc == VP8_FOURCC
                               and vp8.is_keyframe(data[offset])))
        offset += size
    return IvfIndex(fourcc, width, height, Fraction(scale, rate), frames)
