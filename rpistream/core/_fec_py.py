"""Pure-Python twin of the compiled FEC encoder (ext/rpistream/core/_fec.pyx).

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

from rpistream.core.fec_format import (
    EXT_WHAT,
    MAX_MEDIA_PACKETS,
    MAX_PACKET_SIZE,
    SCHEMES,
    SHORT_MASK_PACKETS,
    BEDE,
    check_ext_room,
    check_group,
    check_scheme,
    mask_error,
    packet_error,
)
from rpistream.core.rtp_format import ONE_BYTE_EXT_HEADER, RTP_HEADER_SIZE, check_range

def _ext_layout(packet) -> tuple[int, int]:
    """(offset of the extension elements counted from byte 12, their room) of an
    RFC 8285 one-byte-header block; room 0 without one."""
    offset = 4 * (packet[0] & 0x0F)  # CSRCs come first (RFC 3550 §5.1)
    block = RTP_HEADER_SIZE + offset
    if not packet[0] & 0x10 or len(packet) < block + ONE_BYTE_EXT_HEADER:
        return offset + ONE_BYTE_EXT_HEADER, 0
    profile, words = struct.unpack_from("!HH", packet, block)
    room = min(4 * words, len(packet) - block - ONE_BYTE_EXT_HEADER) if profile == BEDE else 0
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
        check_range("sn_base", sn_base, 0, 0xFFFF)
        check_range("media_ssrc", media_ssrc, 0, 0xFFFFFFFF)
        check_range("payload_type", payload_type, 0, 127)
        ext = memoryview(ext).cast("B")
        check_ext_room(len(ext), self.ext_room, EXT_WHAT)
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
        check_range("red_block_type", red_block_type, -1, 127)
        red = bytes((red_block_type,)) if red_block_type >= 0 else b""
        out = bytearray(b"".join((memoryview(header).cast("B"), red, self._payload)))
        self._patch(out, len(out) - len(self._payload), sn_base, media_ssrc, payload_type,
                    ext)
        return bytes(out)


def encode(scheme: str, packets, masks) -> list[FecPayload]:
    """FEC payloads for one group of laid-out media packets (buffers, in
    sequence order: packet i is SN base + i for every viewer), one per mask
    (bit i ⇒ packet i; see masks())."""
    flexfec = check_scheme(scheme)
    packets = list(packets)
    media_count = len(packets)
    check_group(media_count)
    views = [memoryview(packet).cast("B") for packet in packets]
    for index, view in enumerate(views):
        if not RTP_HEADER_SIZE <= len(view) <= MAX_PACKET_SIZE or view[0] >> 6 != 2:
            packet_error(index, view)
    masks = list(masks)
    for index, mask in enumerate(masks):
        if type(mask) is not int or not 0 < mask < 1 << media_count:
            mask_error(index, mask, media_count)
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
