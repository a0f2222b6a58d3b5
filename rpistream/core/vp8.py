"""VP8 frames: the uncompressed header every frame starts with (RFC 6386 §9.1)."""

from __future__ import annotations

# RFC 6386 §9.1: the 3-byte frame tag; a key frame adds a start code and its size.
FRAME_TAG_BYTES = 3
KEYFRAME_HEADER_BYTES = 10
KEYFRAME_START_CODE = b"\x9d\x01\x2a"
# RFC 6386 §9.1: versions above 3 are "reserved for future use"; no decoder takes them.
MAX_VERSION = 3


def is_keyframe(first_byte: int) -> bool:
    """RFC 6386 §9.1: bit 0 of the frame tag is 0 for a key frame."""
    return first_byte & 1 == 0


def frame_problem(frame, keyframe: bool) -> str | None:
    """What makes `frame` (a compressed VP8 frame) unusable, in words, or None.

    Reads only its header: the frame tag's version, key-frame bit and first
    partition size, which must fit in the frame (so a frame cut short before
    its first partition ends is caught), and a key frame's start code.
    """
    view = memoryview(frame).cast("B")
    if len(view) < FRAME_TAG_BYTES:
        return f"a VP8 frame of {len(view)} bytes, shorter than its frame tag"
    tag = view[0] | view[1] << 8 | view[2] << 16
    if (tag >> 1) & 7 > MAX_VERSION:
        return f"VP8 frame tag version {(tag >> 1) & 7} (0 to {MAX_VERSION} exist): not VP8"
    if is_keyframe(tag) != keyframe:
        return (f"flagged a {'key' if keyframe else 'delta'} frame, but its frame tag says "
                f"{'delta' if keyframe else 'key'} frame")
    header = FRAME_TAG_BYTES
    if keyframe:
        header = KEYFRAME_HEADER_BYTES
        if len(view) < header or bytes(view[3:6]) != KEYFRAME_START_CODE:
            return "a VP8 key frame without its start code 9d 01 2a"
    first_partition = tag >> 5
    if header + first_partition > len(view):
        return (f"a VP8 frame of {len(view)} bytes cut short: its first partition alone "
                f"is {first_partition} bytes")
    return None
