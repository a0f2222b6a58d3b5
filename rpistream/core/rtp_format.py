"""The RTP formats both packetizers write (the compiled one in
ext/rpistream/core/_rtp.pyx, its twin in _rtp_py.py): sizes, bounds, the
headroom left for what wraps or accompanies a packet, and the checks and
messages they share, so the two refuse the same input in the same words."""

from __future__ import annotations

from rpistream.core import h264

RTP_HEADER_SIZE = 12  # RFC 3550 §5.1: fixed header, no CSRCs
ONE_BYTE_EXT_HEADER = 4  # RFC 8285 §4.2: 0xBEDE profile + 16-bit length in words
MAX_EXT_ROOM = 252  # 63 words: room for 15 one-byte elements of 16 bytes and more

# Bytes that something wrapping or accompanying a media packet later adds to
# it; the media packet is made that much smaller so the result fits the MTU.
RED_HEADROOM = 1  # RFC 2198 §3: the final (primary) block header is 1 byte
# RFC 5109 §7.3 + §7.4: the ULPFEC packet is 12 (RTP) + 10 (FEC header) + 8
# (level-0 header with the 48-bit mask, L=1) + max(len - 12) of the packets it
# protects, so it is 18 bytes longer than the longest of them.
ULPFEC_HEADROOM = 18
# FlexFEC-03 as libwebrtc writes it (flexfec_03_header_reader_writer.cc): the
# largest header is 12 base + 6 stream-specific (SSRC count, SN base) + 14 mask
# bytes (K-bits 0..2) = 32, followed by max(len - 12) of the protected packets.
FLEXFEC_HEADROOM = 32
RTX_HEADROOM = 2  # RFC 4588 §4: the original sequence number before the payload
# RED wraps the ULPFEC packet as well (RFC 5109 §14.2), so their headrooms add.
DEFAULT_HEADROOM = max(RED_HEADROOM + ULPFEC_HEADROOM, FLEXFEC_HEADROOM, RTX_HEADROOM)

MIN_MTU = 300  # below this a 1200-byte keyframe alone would take 5+ packets
MAX_MTU = 9000  # jumbo Ethernet frame
MIN_PAYLOAD = 64  # below this the headers outweigh the media

_START_CODE = b"\x00\x00\x01"  # ITU-T H.264 Annex B.1


def check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}, got {value}")


def check_ext(length: int, ext_room: int) -> None:
    if length > ext_room:
        raise ValueError(f"header extension elements take {length} bytes but the "
                         f"packetizer reserved ext_room={ext_room}; raise ext_room")


def ext_block_size(ext_room: int) -> int:
    """RFC 8285 §4.2: the one-byte-header extension block for `ext_room` bytes
    of elements, in whole 32-bit words; none without elements."""
    return ONE_BYTE_EXT_HEADER + ((ext_room + 3) & ~3) if ext_room else 0


def headroom(ext_room: int, *, rtx: bool, ulpfec: bool, flexfec: bool) -> int:
    """Bytes a media packet must leave free for what its viewers may
    negotiate, and no more: every byte left free is paid for in packets.

    An FEC packet protects the media packet's extension block (it is part of
    len - 12) and carries one of its own, as libwebrtc's FEC packets do: so
    with FEC the block counts twice against the MTU."""
    room = RTX_HEADROOM if rtx else 0
    if ulpfec:
        room = max(room, RED_HEADROOM + ULPFEC_HEADROOM + ext_block_size(ext_room))
    if flexfec:
        room = max(room, FLEXFEC_HEADROOM + ext_block_size(ext_room))
    return room


def geometry(mtu: int, ext_room: int, room) -> tuple[int, int, int, int]:
    """(ext_room rounded up, RTP header size, headroom, max payload) for a
    packetizer; headroom None leaves room for any FEC scheme and RTX."""
    check_range("mtu", mtu, MIN_MTU, MAX_MTU)
    check_range("ext_room", ext_room, 0, MAX_EXT_ROOM)
    if room is None:
        room = headroom(ext_room, rtx=True, ulpfec=True, flexfec=True)
    check_range("headroom", room, 0, mtu)
    header_size = RTP_HEADER_SIZE + ext_block_size(ext_room)
    max_payload = mtu - room - header_size
    if max_payload < MIN_PAYLOAD:
        raise ValueError(f"mtu={mtu} leaves {max_payload} bytes of payload after "
                         f"headroom={room} and {header_size} bytes of RTP header and "
                         f"extensions; at least {MIN_PAYLOAD} are needed")
    return (ext_room + 3) & ~3, header_size, room, max_payload


def split_annexb(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each NAL unit in an Annex-B access unit (H.264 §B.1),
    refusing input that is not Annex-B."""
    position = data.find(_START_CODE)
    if position < 0:
        raise ValueError("H.264 access unit has no start code (00 00 01): "
                         "the packetizer needs Annex-B byte-stream input")
    if data.count(0, 0, position) != position:
        raise ValueError(f"H.264 access unit has {position} bytes before its first "
                         f"start code; Annex-B input must begin with 00 00 01 or "
                         f"00 00 00 01")
    nals = h264.nal_units(data)
    if not nals:
        raise ValueError("H.264 access unit contains only start codes, no NAL unit")
    return nals


def frame_bytes(frame) -> memoryview:
    view = memoryview(frame).cast("B")
    if not len(view):
        raise ValueError("frame is empty: there is nothing to packetize")
    return view
