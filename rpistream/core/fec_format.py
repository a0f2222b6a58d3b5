"""The FEC formats both encoders write (the compiled one in
ext/rpistream/core/_fec.pyx, its twin in _fec_py.py): ULPFEC (RFC 5109) and
FlexFEC-03 (libwebrtc's draft-03 writer) sizes and bounds, how many FEC
packets a group gets and which media packets each protects, and the checks
and messages they share, so the two refuse the same input in the same words."""

from __future__ import annotations

import struct

from rpistream.core.rtp_format import MAX_EXT_ROOM, RTP_HEADER_SIZE, check_range

SCHEMES = ("ulpfec", "flexfec-03")
MASK_KINDS = ("interleaved", "block")
MAX_MEDIA_PACKETS = 48  # RFC 5109 §7.4: the long (L=1) mask has 48 bits
SHORT_MASK_PACKETS = 16  # RFC 5109 §7.4: the 16-bit mask (L=0) covers up to 16
ULPFEC_HEADER_SIZE = 10  # RFC 5109 §7.3: FEC header
ULPFEC_LEVEL0_SHORT = 4  # RFC 5109 §7.4: protection length + 16-bit mask
ULPFEC_LEVEL0_LONG = 8  # ... + 48-bit mask (L=1)
FLEXFEC_BASE_HEADER_SIZE = 18  # libwebrtc: 12 base + 6 stream-specific (SSRC, SN base)
FLEXFEC_MASK_SIZES = (2, 6, 14)  # libwebrtc: mask bytes with K-bit 0, 1 or 2 set
MAX_PACKET_SIZE = RTP_HEADER_SIZE + 0xFFFF  # the length recovery field is 16 bits
# Share of the media packet count sent as FEC packets unless told otherwise.
# Groups of ten get three FEC packets (classes of 4, 3, 3): a lost media packet
# comes back when the rest of its class and its FEC packet arrive: at low
# random loss most do (bench/bench_fec.py measures the share at 5 % and 10 %);
# rates up to 1 are accepted.
DEFAULT_RATE = 0.25
DEFAULT_KIND = "interleaved"
_RATE_SCALE = 1_000_000  # rates are taken to 6 decimals: ceil() of 20 × 0.15 is 3
BEDE = 0xBEDE  # RFC 8285 §4.2: one-byte-header extension block profile
_VERSION_2 = 0x80
EXT_WHAT = "the packetizer of the protected packets reserved ext_room"


def fec_count(media_count: int, rate: float = DEFAULT_RATE) -> int:
    """FEC packets for `media_count` media packets at protection `rate`:
    ceil(media_count × rate), 0 < rate ≤ 1."""
    check_range("media_count", media_count, 1, MAX_MEDIA_PACKETS)
    if not 0 < rate <= 1:
        raise ValueError(f"FEC rate must be above 0 and at most 1 (FEC packets per "
                         f"media packet), got {rate}")
    scaled = round(rate * _RATE_SCALE)
    return -(-media_count * scaled // _RATE_SCALE)


def masks(media_count: int, fec_count: int, kind: str = DEFAULT_KIND) -> list[int]:
    """Which media packets each FEC packet protects: one int per FEC packet, bit
    i set ⇒ media packet i of the group (sequence number SN base + i).

    Both kinds split the group into `fec_count` disjoint classes, each protected
    by one FEC packet, so any loss pattern with at most one lost packet per class
    (counting the class's FEC packet) is recovered; for random loss the two are
    equivalent. They differ on bursts:

    - "interleaved": FEC j protects media i where i % fec_count == j. Any burst
      of up to fec_count consecutive media losses is recovered.
    - "block": FEC j protects the j-th run of consecutive packets (sizes differ
      by at most one). A burst inside one block is not recovered; losses spread
      one per block are.
    """
    check_range("media_count", media_count, 1, MAX_MEDIA_PACKETS)
    check_range("fec_count", fec_count, 1, media_count)
    if kind == "interleaved":
        return [sum(1 << i for i in range(j, media_count, fec_count))
                for j in range(fec_count)]
    if kind == "block":
        base, larger = divmod(media_count, fec_count)
        result, start = [], 0
        for j in range(fec_count):
            size = base + (j < larger)
            result.append(((1 << size) - 1) << start)
            start += size
        return result
    raise ValueError(f"mask kind must be 'interleaved' or 'block', got {kind!r}")


def rtp_header(payload_type: int, seq: int, timestamp: int, ssrc: int, ext=b"",
               ext_room: int | None = None, marker: bool = False) -> bytes:
    """An RTP header (RFC 3550 §5.1) for a packet a viewer sends around the shared
    batches, e.g. its FEC packets: one-byte-header extension elements `ext` in a
    block of `ext_room` bytes (default: len(ext) rounded up to 32-bit words;
    RFC 8285 §4.2, zero bytes are padding)."""
    check_range("payload_type", payload_type, 0, 127)
    check_range("seq", seq, 0, 0xFFFF)
    check_range("timestamp", timestamp, 0, 0xFFFFFFFF)
    check_range("ssrc", ssrc, 0, 0xFFFFFFFF)
    ext = bytes(ext)
    if ext_room is None:
        ext_room = len(ext)
    check_range("ext_room", ext_room, 0, MAX_EXT_ROOM)
    ext_room = (ext_room + 3) & ~3
    check_ext_room(len(ext), ext_room, "ext_room")
    header = struct.pack("!BBHII", _VERSION_2 | (0x10 if ext_room else 0),
                         (0x80 if marker else 0) | payload_type, seq, timestamp, ssrc)
    if not ext_room:
        return header
    return header + struct.pack("!HH", BEDE, ext_room // 4) + ext + bytes(ext_room - len(ext))


def check_ext_room(length: int, ext_room: int, what: str) -> None:
    if length > ext_room:
        raise ValueError(f"header extension elements take {length} bytes but "
                         f"{what}={ext_room}; raise ext_room")


def check_scheme(scheme: str) -> bool:
    """True for FlexFEC-03, False for ULPFEC."""
    if scheme not in SCHEMES:
        raise ValueError(f"FEC scheme must be 'ulpfec' or 'flexfec-03', got {scheme!r}")
    return scheme == "flexfec-03"


def check_group(count: int) -> None:
    if count == 0:
        raise ValueError("an FEC group needs at least one media packet, got none")
    if count > MAX_MEDIA_PACKETS:
        raise ValueError(f"an FEC group protects at most {MAX_MEDIA_PACKETS} media packets "
                         f"(RFC 5109 §7.4: 48-bit mask), got {count}; split the group")


def packet_error(index: int, packet) -> None:
    """Raise the error for a packet that cannot be protected."""
    if len(packet) < RTP_HEADER_SIZE:
        raise ValueError(f"packet {index} is {len(packet)} bytes, shorter than an RTP "
                         f"header ({RTP_HEADER_SIZE})")
    if packet[0] >> 6 != 2:
        raise ValueError(f"packet {index} is not RTP version 2 "
                         f"(first byte 0x{packet[0]:02x})")
    if len(packet) > MAX_PACKET_SIZE:
        raise ValueError(f"packet {index} is {len(packet)} bytes; FEC protects packets "
                         f"of at most {MAX_PACKET_SIZE} bytes")


def mask_error(index: int, mask, media_count: int) -> None:
    raise ValueError(f"mask {index} is {mask!r}: it must name 1..{media_count} packets "
                     f"of the group, as an int with bits 0..{media_count - 1}")
