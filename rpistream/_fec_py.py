"""Pure-Python twin of the compiled FEC encoder (ext/rpistream/_fec.pyx).

Forward error correction is computed once per group of media packets per
camera, over the packets as the packetizer laid them out (PacketBatch.packet(i):
payload type, sequence number, SSRC and header-extension values zero), and
shared by every viewer. Only what the XOR does not cover, or covers with a
per-viewer value, is patched per viewer by FecPayload.write():

- ULPFEC (RFC 5109 §7–8) and FlexFEC-03 XOR byte 0 (P, X, CC), byte 1 (M, PT),
  the timestamp, the length (len − 12) and every byte from offset 12 (CSRCs,
  the extension block, the payload), zero-padded to the longest. Sequence
  numbers and SSRCs are not XORed: the FEC header names them.
- The timestamp is camera-wide, the same for every viewer: nothing to patch.
- The media payload type enters the PT-recovery bits once per protected
  packet: if their count k is odd, the viewer's PT is XORed in; if even, it
  cancels. The same holds for the viewer's extension elements (written into
  the zero room of the laid-out packets, RFC 8285 §4.2) with mutable values —
  abs-send-time, transport-wide sequence number — already zeroed by the
  caller, as libwebrtc zeroes them on both sides (RtpPacket::
  ZeroMutableExtensions: the sender writes them after FEC, the receiver zeroes
  them before its XOR).
- The SN base is the viewer's sequence number of the group's first packet;
  FlexFEC also names the protected SSRC.

With ULPFEC every video packet goes RED-wrapped (RFC 2198 §3, primary block
only), FEC packets too, in the media SSRC's sequence space, each group's FEC
packets right after its media packets. As libwebrtc does it, header extensions
stay in RED's outer header and the block is the payload only: the sender
(rtp_sender_video.cc BuildRedPayload: a copy of the media packet's header, PT
red, then 1 byte media PT + the media payload; ulpfec_generator.cc
GetFecPackets: the last media packet's header, PT red, no marker, then 1 byte
ulpfec PT + the FEC payload) and the receiver (ulpfec_receiver.cc
AddReceivedRedPacket: headers_size() bytes of header, PT reset to the block's,
then what follows the block header; for FEC, what follows the block header).
So ULPFEC protects the unwrapped packet — media PT, extension block, payload —
which is PacketBatch.write(); PacketBatch.write_red() sends it, and
FecPayload.write_packet(header, ..., red_block_type=ulpfec PT) the FEC packet.

FlexFEC-03 is written as libwebrtc writes it (modules/rtp_rtcp/source/
flexfec_03_header_reader_writer.cc, FinalizeFecHeader; the base fields from
forward_error_correction.cc, GenerateFecPayloads/XorHeaders), which is
draft-ietf-payload-flexible-fec-scheme-03, not RFC 8627:

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |0|0|P|X|  CC   |M| PT recovery |        length recovery        |
    |                          TS recovery                          |
    |   SSRCCount=1 |                reserved (0)                   |
    |                         protected SSRC                        |
    |            SN base            |k|  mask bits 0..14            |
    |k|               mask bits 15..45 (if k0 = 0)                  |
    |k|b46|b47|  zero: 61 bits, mask bytes 6..13 (if k0 = k1 = 0)   |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

followed by the XOR of bytes 12.. of the protected packets (protection length
implicit: the rest of the packet). libwebrtc derives the FlexFEC mask from its
ULPFEC mask (16 bits for groups of up to 16 packets, else 48) by shifting in
the k-bits: 2 mask bytes when the 16-bit mask leaves bit 15 clear, 6 when it
sets it or the 48-bit mask leaves bits 46 and 47 clear, 14 otherwise. Same
choice here, so the bytes match libwebrtc's for the same mask.
"""

from __future__ import annotations

import struct

from rpistream._rtp_py import (
    MAX_EXT_ROOM,
    ONE_BYTE_EXT_HEADER,
    RTP_HEADER_SIZE,
    _check_range,
)

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
_BEDE = 0xBEDE  # RFC 8285 §4.2: one-byte-header extension block profile
_VERSION_2 = 0x80
_EXT_WHAT = "the packetizer of the protected packets reserved ext_room"


def fec_count(media_count: int, rate: float = DEFAULT_RATE) -> int:
    """FEC packets for `media_count` media packets at protection `rate`:
    ceil(media_count × rate), 0 < rate ≤ 1."""
    _check_range("media_count", media_count, 1, MAX_MEDIA_PACKETS)
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
    _check_range("media_count", media_count, 1, MAX_MEDIA_PACKETS)
    _check_range("fec_count", fec_count, 1, media_count)
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
    _check_range("payload_type", payload_type, 0, 127)
    _check_range("seq", seq, 0, 0xFFFF)
    _check_range("timestamp", timestamp, 0, 0xFFFFFFFF)
    _check_range("ssrc", ssrc, 0, 0xFFFFFFFF)
    ext = bytes(ext)
    if ext_room is None:
        ext_room = len(ext)
    _check_range("ext_room", ext_room, 0, MAX_EXT_ROOM)
    ext_room = (ext_room + 3) & ~3
    _check_ext(len(ext), ext_room, "ext_room")
    header = struct.pack("!BBHII", _VERSION_2 | (0x10 if ext_room else 0),
                         (0x80 if marker else 0) | payload_type, seq, timestamp, ssrc)
    if not ext_room:
        return header
    return header + struct.pack("!HH", _BEDE, ext_room // 4) + ext + bytes(ext_room - len(ext))


def _check_ext(length: int, ext_room: int, what: str) -> None:
    if length > ext_room:
        raise ValueError(f"header extension elements take {length} bytes but "
                         f"{what}={ext_room}; raise ext_room")


def _check_scheme(scheme: str) -> bool:
    """True for FlexFEC-03, False for ULPFEC."""
    if scheme not in SCHEMES:
        raise ValueError(f"FEC scheme must be 'ulpfec' or 'flexfec-03', got {scheme!r}")
    return scheme == "flexfec-03"


def _check_group(count: int) -> None:
    if count == 0:
        raise ValueError("an FEC group needs at least one media packet, got none")
    if count > MAX_MEDIA_PACKETS:
        raise ValueError(f"an FEC group protects at most {MAX_MEDIA_PACKETS} media packets "
                         f"(RFC 5109 §7.4: 48-bit mask), got {count}; split the group")


def _packet_error(index: int, packet) -> None:
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


def _mask_error(index: int, mask, media_count: int) -> None:
    raise ValueError(f"mask {index} is {mask!r}: it must name 1..{media_count} packets "
                     f"of the group, as an int with bits 0..{media_count - 1}")


def _ext_layout(packet) -> tuple[int, int]:
    """(offset of the extension elements counted from byte 12, their room) of an
    RFC 8285 one-byte-header block; room 0 without one."""
    offset = 4 * (packet[0] & 0x0F)  # CSRCs come first (RFC 3550 §5.1)
    block = RTP_HEADER_SIZE + offset
    if not packet[0] & 0x10 or len(packet) < block + ONE_BYTE_EXT_HEADER:
        return offset + ONE_BYTE_EXT_HEADER, 0
    profile, words = struct.unpack_from("!HH", packet, block)
    room = min(4 * words, len(packet) - block - ONE_BYTE_EXT_HEADER) if profile == _BEDE else 0
    return offset + ONE_BYTE_EXT_HEADER, room


def _flexfec_mask(mask: int, media_count: int) -> bytes:
    """libwebrtc's FlexFEC-03 mask with K-bits from our mask (bit i ⇒ packet i)."""
    bit = [(mask >> i) & 1 for i in range(MAX_MEDIA_PACKETS)]
    part0 = sum(bit[i] << (14 - i) for i in range(15))
    part1 = sum(bit[i] << (45 - i) for i in range(15, 46))
    part2 = (bit[46] << 62) | (bit[47] << 61)
    if media_count <= SHORT_MASK_PACKETS:
        if not bit[15]:
            return struct.pack("!H", 0x8000 | part0)
        return struct.pack("!HI", part0, 0x80000000 | part1)
    if not (bit[46] or bit[47]):
        return struct.pack("!HI", part0, 0x80000000 | part1)
    return struct.pack("!HIQ", part0, part1, (1 << 63) | part2)


def _ulpfec_mask(mask: int, long_mask: bool) -> bytes:
    """RFC 5109 §7.4 mask: bit i, most significant first, ⇒ SN base + i."""
    wire = sum(((mask >> i) & 1) << (47 - i) for i in range(MAX_MEDIA_PACKETS))
    return wire.to_bytes(6) if long_mask else (wire >> 32).to_bytes(2)


def _xor_into(target: int, data, size: int) -> int:
    """XOR `data` zero-padded to `size` bytes into the big-endian int `target`."""
    return target ^ (int.from_bytes(data) << 8 * (size - len(data)))


def xor_parity(packets) -> bytes:
    """The parity core: the XOR of `packets` (bytes-like), zero-padded to the longest."""
    views = [memoryview(packet).cast("B") for packet in packets]
    size = max((len(view) for view in views), default=0)
    parity = 0
    for view in views:
        parity = _xor_into(parity, view, size)
    return parity.to_bytes(size)


class FecPayload:
    """One FEC packet's payload (the bytes after its RTP header; for ULPFEC
    before RED wrapping), computed once for every viewer of a camera."""

    __slots__ = ("_payload", "_flexfec", "_ext_offset", "count", "mask",
                 "protection_length", "header_size", "ext_room", "scheme")

    def __init__(self):
        raise TypeError("a FecPayload comes from encode()")

    @classmethod
    def _new(cls, payload: bytes, flexfec: bool, count: int, mask: int,
             protection_length: int, header_size: int, ext_offset: int,
             ext_room: int) -> FecPayload:
        self = cls.__new__(cls)
        self._payload = payload
        self._flexfec = flexfec
        self._ext_offset = ext_offset  # where extension elements go, from the parity start
        self.count = count  # k: how many media packets this FEC packet protects
        self.mask = mask  # bit i ⇒ media packet i of the group
        self.protection_length = protection_length  # max(len − 12) of those packets
        self.header_size = header_size  # FEC header (+ level-0 header for ULPFEC)
        self.ext_room = ext_room
        self.scheme = SCHEMES[flexfec]
        return self

    @property
    def payload(self) -> bytes:
        """The shared payload: SN base, protected SSRC 0; media PT and extension
        elements as in the laid-out packets (zero)."""
        return self._payload

    def __len__(self) -> int:
        return len(self._payload)

    def __repr__(self) -> str:
        return (f"FecPayload({self.scheme}, {self.count} packets, mask=0x{self.mask:x}, "
                f"{len(self._payload)} bytes)")

    def _patch(self, out: bytearray, base: int, sn_base: int, media_ssrc: int,
               payload_type: int, ext) -> None:
        _check_range("sn_base", sn_base, 0, 0xFFFF)
        _check_range("media_ssrc", media_ssrc, 0, 0xFFFFFFFF)
        _check_range("payload_type", payload_type, 0, 127)
        ext = memoryview(ext).cast("B")
        _check_ext(len(ext), self.ext_room, _EXT_WHAT)
        if self.count & 1:
            # Odd k: the viewer's PT and extension elements do not cancel out.
            out[base + 1] ^= payload_type
            start = base + self.header_size + self._ext_offset
            for index, value in enumerate(ext):
                out[start + index] ^= value
        if self._flexfec:
            struct.pack_into("!IH", out, base + 12, media_ssrc, sn_base)
        else:
            struct.pack_into("!H", out, base + 2, sn_base)  # RFC 5109 §7.3: SN base

    def write(self, sn_base: int, media_ssrc: int, payload_type: int, ext=b"") -> bytes:
        """This payload for one viewer: `sn_base` its sequence number of the group's
        first packet, `media_ssrc` and `payload_type` its media stream's (the SSRC
        is written by FlexFEC only: ULPFEC protects its own SSRC), `ext` the
        extension elements it writes into the media packets, mutable values zeroed."""
        out = bytearray(self._payload)
        self._patch(out, 0, sn_base, media_ssrc, payload_type, ext)
        return bytes(out)

    def write_packet(self, header, sn_base: int, media_ssrc: int, payload_type: int,
                     ext=b"", red_block_type: int = -1) -> bytes:
        """A whole FEC packet for one viewer: `header` (its RTP header, from
        rtp_header()), then — when red_block_type ≥ 0 — the RFC 2198 §3 primary
        block header F=0|red_block_type (the ULPFEC payload type; `header` then
        carries PT=red), then write(...)'s payload. One allocation."""
        _check_range("red_block_type", red_block_type, -1, 127)
        red = bytes((red_block_type,)) if red_block_type >= 0 else b""
        out = bytearray(b"".join((memoryview(header).cast("B"), red, self._payload)))
        self._patch(out, len(out) - len(self._payload), sn_base, media_ssrc, payload_type,
                    ext)
        return bytes(out)


def encode(scheme: str, packets, masks) -> list[FecPayload]:
    """FEC payloads for one group of laid-out media packets (buffers, in
    sequence order: packet i is SN base + i for every viewer), one per mask
    (bit i ⇒ packet i; see masks())."""
    flexfec = _check_scheme(scheme)
    packets = list(packets)
    media_count = len(packets)
    _check_group(media_count)
    views = [memoryview(packet).cast("B") for packet in packets]
    for index, view in enumerate(views):
        if not RTP_HEADER_SIZE <= len(view) <= MAX_PACKET_SIZE or view[0] >> 6 != 2:
            _packet_error(index, view)
    masks = list(masks)
    for index, mask in enumerate(masks):
        if type(mask) is not int or not 0 < mask < 1 << media_count:
            _mask_error(index, mask, media_count)
    layouts = [_ext_layout(view) for view in views]
    long_mask = media_count > SHORT_MASK_PACKETS
    result = []
    for mask in masks:
        protected = [i for i in range(media_count) if mask >> i & 1]
        size = max(len(views[i]) - RTP_HEADER_SIZE for i in protected)
        byte0 = byte1 = timestamp = length = parity = 0
        for i in protected:
            view = views[i]
            byte0 ^= view[0]
            byte1 ^= view[1]
            timestamp ^= int.from_bytes(view[4:8])
            length ^= len(view) - RTP_HEADER_SIZE
            parity = _xor_into(parity, view[RTP_HEADER_SIZE:], size)
        # The extension elements sit at one offset in every protected packet, or
        # the viewer's elements cannot be patched in: then there is no room.
        offsets = {layouts[i][0] for i in protected}
        ext_room = min(layouts[i][1] for i in protected) if len(offsets) == 1 else 0
        if flexfec:
            header = struct.pack("!BBHIB3xIH", byte0 & 0x3F, byte1, length, timestamp, 1,
                                 0, 0) + _flexfec_mask(mask, media_count)
        else:
            # RFC 5109 §7.3: E=0, L; P/X/CC, M/PT, TS and length recovery; §7.4:
            # protection length (the whole longest packet), mask.
            header = struct.pack("!BBHIHH", (byte0 & 0x3F) | (0x40 if long_mask else 0),
                                 byte1, 0, timestamp, length, size) + _ulpfec_mask(mask, long_mask)
        result.append(FecPayload._new(header + parity.to_bytes(size), flexfec, len(protected),
                                      mask, size, len(header), offsets.pop(), ext_room))
    return result
