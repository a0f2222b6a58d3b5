"""H.264 Annex-B byte streams: NAL unit splitting, access units, profile-level-id.

Only what the sources need to label and check the streams they produce: where
NAL units start, which NAL units begin an access unit, and the three SPS bytes
that make up SDP's profile-level-id.
"""

from __future__ import annotations

# H.264 Table 7-1: nal_unit_type values.
NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

_START_CODE = b"\x00\x00\x01"
# A camera's access unit puts its first slice after at most an AUD, SEI, SPS
# and PPS: tens to hundreds of bytes (libx264's first SEI, its version string,
# is the largest, under 1 KB). The check reads no further than this.
CHECK_HEAD_BYTES = 4096
# The shortest slice NAL unit: its header byte, then a slice header holds at
# least first_mb_in_slice, slice_type, pic_parameter_set_id and frame_num
# (7.3.3), more than one byte; a P frame with every macroblock skipped is
# still a few bytes more.
MIN_SLICE_BYTES = 3


def nal_units(stream) -> list[tuple[int, int]]:
    """(start, end) of each NAL unit in an Annex-B byte stream (B.1.1).

    `start` is the offset of the NAL header byte (just past the 3-byte start
    code); `end` excludes the next start code, including the zero byte of a
    4-byte start code and trailing_zero_8bits.
    """
    spans = []
    start = stream.find(_START_CODE)
    while start >= 0:
        start += len(_START_CODE)
        nxt = stream.find(_START_CODE, start)
        end = len(stream) if nxt < 0 else nxt
        while end > start and stream[end - 1] == 0:
            end -= 1
        if end > start:
            spans.append((start, end))
        start = nxt
    return spans


def nal_type(stream, start: int) -> int:
    """nal_unit_type of the NAL unit whose header byte is at `start` (7.3.1)."""
    return stream[start] & 0x1F


def starts_access_unit(stream, start: int, end: int) -> bool:
    """Whether this NAL unit is the first of a new access unit (7.4.1.2.3).

    AUD, SPS, PPS and SEI come before the first slice of a picture; a slice
    starts a new picture when first_mb_in_slice == 0, which as ue(v) is a
    single '1' bit: the top bit of the byte after the NAL header.
    """
    kind = nal_type(stream, start)
    if kind in (NAL_AUD, NAL_SPS, NAL_PPS, NAL_SEI) or 14 <= kind <= 18:
        return True
    if kind in (NAL_SLICE, NAL_IDR):
        return end - start > 1 and stream[start + 1] & 0x80 != 0
    return False


def rbsp(nal: bytes) -> bytes:
    """The NAL unit with emulation_prevention_three_byte removed (7.4.1)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def profile_level_id_from_sps(sps_nal: bytes) -> str:
    """RFC 6184 §8.1 profile-level-id: profile_idc, the constraint_set flags
    byte and level_idc, the first three bytes of seq_parameter_set_data
    (H.264 §7.3.2.1.1), as six lowercase hex digits (e.g. "42c01f").

    `sps_nal` is the whole NAL unit, header byte included, no start code.
    """
    sps_nal = bytes(sps_nal)
    if not sps_nal or sps_nal[0] & 0x1F != NAL_SPS:
        head = sps_nal[:1].hex() or "nothing"
        raise ValueError(f"not an SPS NAL unit (header byte {head}, expected type "
                         f"{NAL_SPS}): pass the SPS without its start code")
    data = rbsp(sps_nal[1:8])
    if len(data) < 3:
        raise ValueError(f"SPS of {len(sps_nal)} bytes is too short to hold "
                         f"profile_idc, constraint flags and level_idc")
    return data[:3].hex()


def find_sps(access_unit) -> bytes | None:
    """The first SPS NAL unit in an Annex-B access unit, or None."""
    for start, end in nal_units(access_unit):
        if nal_type(access_unit, start) == NAL_SPS:
            return bytes(access_unit[start:end])
    return None


def nal_types(access_unit) -> list[int]:
    """nal_unit_type of each NAL unit in an Annex-B access unit, in order."""
    return [nal_type(access_unit, start) for start, _ in nal_units(access_unit)]


def access_unit_problem(access_unit, keyframe: bool) -> str | None:
    """What makes `access_unit` (Annex-B) unusable, in words, or None.

    Reads only up to its first slice: it must begin with a start code (B.1.1),
    every NAL unit before the slice must have forbidden_zero_bit 0 and a
    specified type (Table 7-1), the slice must be there and at least a slice
    header long, and it is an IDR slice exactly when the frame is flagged a
    keyframe. A unit cut short inside its slice data passes: only a decoder
    could tell, and the encoder's next keyframe repairs what it showed.
    """
    view = memoryview(access_unit).cast("B")
    head = bytes(view[:CHECK_HEAD_BYTES])
    first = head.find(_START_CODE)
    if first < 0 or head.count(0, 0, first) != first:
        return "an H.264 access unit that does not begin with an Annex-B start code"
    for start, end in nal_units(head):
        header = head[start]
        kind = header & 0x1F
        if header & 0x80 or kind == 0 or kind >= 24:
            return f"an H.264 NAL unit with header byte {header:02x}: not H.264"
        if kind in (NAL_SLICE, NAL_IDR):
            size = (len(view) if end == len(head) else end) - start
            if size < MIN_SLICE_BYTES:
                return f"an H.264 slice of {size} bytes: cut short"
            if (kind == NAL_IDR) != keyframe:
                return (f"flagged a {'key' if keyframe else 'delta'} frame, but its first "
                        f"slice is {'not ' if keyframe else ''}an IDR slice")
            return None
    if len(view) <= CHECK_HEAD_BYTES:
        return f"an H.264 access unit of {len(view)} bytes without a slice: cut short"
    return f"an H.264 access unit with no slice in its first {CHECK_HEAD_BYTES} bytes"


def access_units(stream) -> list[tuple[int, int, bool]]:
    """(start, end, keyframe) of each access unit in an Annex-B byte stream.

    `start` is the first byte of the access unit's first start code, `end`
    the first byte of the next one's, so stream[start:end] is the access unit
    as Annex-B. keyframe: it holds an IDR slice.
    """
    units: list[tuple[int, int, bool]] = []
    start = -1
    has_slice = keyframe = False
    for nal_start, nal_end in nal_units(stream):
        kind = nal_type(stream, nal_start)
        # An AUD/SPS/PPS/SEI prefix belongs to the picture after it: only a
        # boundary after the current unit's first slice begins a new unit.
        if start < 0 or (has_slice and starts_access_unit(stream, nal_start, nal_end)):
            code = nal_start - len(_START_CODE)
            if code > 0 and stream[code - 1] == 0:
                code -= 1  # 4-byte start code
            if start >= 0:
                units.append((start, code, keyframe))
            start, has_slice, keyframe = code, False, False
        has_slice = has_slice or kind in (NAL_SLICE, NAL_IDR)
        keyframe = keyframe or kind == NAL_IDR
    if start >= 0:
        units.append((start, len(stream), keyframe))
    return units
