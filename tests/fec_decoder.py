"""An FEC receiver for the tests and benchmarks, written from the specs, sharing
no code with rpistream's encoder.

It reads the FEC headers from the bytes (RFC 5109 §7.3–7.4 for ULPFEC; for
FlexFEC-03 the layout libwebrtc's Flexfec03HeaderReader reads, K-bits and all),
unwraps RFC 2198 RED as libwebrtc's UlpfecReceiver does (ulpfec_receiver.cc
AddReceivedRedPacket: outer header with the block's payload type, payload after
the block header; header extensions stay in the outer header), zeroes mutable extension values before the XOR as
libwebrtc's receivers do (RtpPacket::ZeroMutableExtensions), and recovers the
way ForwardErrorCorrection::AttemptRecovery does: any FEC packet missing
exactly one of its protected packets restores it, and a restored packet can
complete another FEC packet, until nothing changes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTP_HEADER_SIZE = 12
ONE_BYTE_PROFILE = 0xBEDE


def header_length(packet: bytes) -> int:
    """RFC 3550 §5.1/§5.3.1: fixed header, CSRCs, and the extension block if X."""
    length = RTP_HEADER_SIZE + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        words, = struct.unpack_from("!H", packet, length + 2)
        length += 4 + 4 * words
    return length


def seq_of(packet: bytes) -> int:
    return struct.unpack_from("!H", packet, 2)[0]


def ssrc_of(packet: bytes) -> int:
    return struct.unpack_from("!I", packet, 8)[0]


def payload_type_of(packet: bytes) -> int:
    return packet[1] & 0x7F


def zero_extensions(packet: bytes, ids: frozenset[int]) -> bytes:
    """The packet with the values of the one-byte-header elements (RFC 8285 §4.2)
    whose ids are in `ids` set to zero: what both FEC ends XOR for mutable ones."""
    if not packet[0] & 0x10 or not ids:
        return packet
    block = RTP_HEADER_SIZE + 4 * (packet[0] & 0x0F)
    profile, words = struct.unpack_from("!HH", packet, block)
    if profile != ONE_BYTE_PROFILE:
        return packet
    out = bytearray(packet)
    position, end = block + 4, block + 4 + 4 * words
    while position < end:
        if out[position] == 0:  # padding
            position += 1
            continue
        element_id, length = out[position] >> 4, (out[position] & 0x0F) + 1
        if element_id == 15:  # RFC 8285 §4.2: stop parsing
            break
        if element_id in ids:
            out[position + 1:position + 1 + length] = bytes(length)
        position += 1 + length
    return bytes(out)


def unwrap_red(packet: bytes) -> bytes:
    """RFC 2198 §3 with a primary block only (F=0): the packet it carries."""
    length = header_length(packet)
    block = packet[length]
    if block & 0x80:
        raise ValueError("RED block with F=1: redundant blocks are not expected")
    return (packet[:1] + bytes([(packet[1] & 0x80) | block]) + packet[2:length]
            + packet[length + 1:])


@dataclass
class FecPacket:
    """What recovery needs from one FEC packet, read from its header."""

    protected: list[int]  # sequence numbers
    ssrc: int  # of the protected media stream
    byte0: int  # P|X|CC recovery (low 6 bits)
    byte1: int  # M|PT recovery
    timestamp: int
    length: int  # length recovery
    payload: bytes  # XOR of bytes 12.. of the protected packets


def _mask_bits(mask: int, bits: int) -> list[int]:
    """Offsets from SN base of a mask read most significant bit first."""
    return [i for i in range(bits) if mask >> (bits - 1 - i) & 1]


def parse_ulpfec(payload: bytes, ssrc: int) -> FecPacket:
    """RFC 5109 §7.3 FEC header + §7.4 level-0 header, then the level-0 payload.
    ULPFEC protects its own SSRC (RFC 5109 §7.1; with RED, the media SSRC)."""
    if payload[0] & 0x80:
        raise ValueError("ULPFEC E bit set")
    long_mask = bool(payload[0] & 0x40)
    sn_base, timestamp, length, protection = struct.unpack_from("!HIHH", payload, 2)
    if long_mask:
        mask = int.from_bytes(payload[12:18])
        header, bits = 18, 48
    else:
        mask = int.from_bytes(payload[12:14])
        header, bits = 14, 16
    # GStreamer's rtpulpfecdec drops FEC packets whose protection length is not
    # the rest of the packet; so does this reader.
    if len(payload) != header + protection:
        raise ValueError(f"ULPFEC protection length {protection} but {len(payload) - header} "
                         f"bytes follow the headers")
    protected = [(sn_base + i) & 0xFFFF for i in _mask_bits(mask, bits)]
    return FecPacket(protected, ssrc, payload[0] & 0x3F, payload[1], timestamp, length,
                     payload[header:])


def parse_flexfec03(payload: bytes) -> FecPacket:
    """draft-ietf-payload-flexible-fec-scheme-03 as libwebrtc reads it: single
    SSRC, R=F=0, K-bit-terminated mask of 15, 15+31 or 15+31+63 bits."""
    if payload[0] & 0xC0:
        raise ValueError("FlexFEC-03 R or F bit set")
    length, timestamp, ssrc_count = struct.unpack_from("!HIB", payload, 2)
    if ssrc_count != 1 or payload[9:12] != b"\x00\x00\x00":
        raise ValueError("FlexFEC-03 with other than one SSRC, or reserved bits set")
    ssrc, sn_base = struct.unpack_from("!IH", payload, 12)
    part0, = struct.unpack_from("!H", payload, 18)
    offsets = _mask_bits(part0 & 0x7FFF, 15)
    header = 20
    if not part0 & 0x8000:
        part1, = struct.unpack_from("!I", payload, 20)
        offsets += [15 + i for i in _mask_bits(part1 & 0x7FFFFFFF, 31)]
        header = 24
        if not part1 & 0x80000000:
            part2, = struct.unpack_from("!Q", payload, 24)
            if not part2 >> 63:
                raise ValueError("FlexFEC-03 mask without a K-bit")
            offsets += [46 + i for i in _mask_bits(part2 & ((1 << 63) - 1), 63)]
            header = 32
    protected = [(sn_base + i) & 0xFFFF for i in offsets]
    return FecPacket(protected, ssrc, payload[0] & 0x3F, payload[1], timestamp, length,
                     payload[header:])


def _recover_one(fec: FecPacket, missing: int, known: dict[int, bytes]) -> bytes:
    """RFC 5109 §8.2 / libwebrtc RecoverPacket: XOR the FEC packet with every
    other protected packet; sequence number and SSRC come from the FEC header."""
    size = len(fec.payload)
    byte0, byte1, timestamp, length = fec.byte0, fec.byte1, fec.timestamp, fec.length
    body = int.from_bytes(fec.payload)
    for seq in fec.protected:
        if seq == missing:
            continue
        packet = known[seq]
        tail = len(packet) - RTP_HEADER_SIZE
        if tail > size:
            raise ValueError(f"packet {seq} is longer than the FEC packet protects")
        byte0 ^= packet[0]
        byte1 ^= packet[1]
        timestamp ^= struct.unpack_from("!I", packet, 4)[0]
        length ^= tail
        body ^= int.from_bytes(packet[RTP_HEADER_SIZE:]) << 8 * (size - tail)
    if length > size:
        raise ValueError(f"recovered length {length} exceeds the protection length {size}")
    header = struct.pack("!BBHII", 0x80 | (byte0 & 0x3F), byte1, missing, timestamp, fec.ssrc)
    return header + body.to_bytes(size)[:length]


def recover(media: dict[int, bytes], fecs: list[FecPacket]) -> dict[int, bytes]:
    """Packets restored from `fecs` given the received `media` (by sequence
    number, mutable extension values zeroed): {seq: packet}."""
    known = dict(media)
    recovered = {}
    pending = list(fecs)
    progress = True
    while progress:
        progress = False
        for fec in list(pending):
            missing = [seq for seq in fec.protected if seq not in known]
            if not missing:
                pending.remove(fec)
            elif len(missing) == 1:
                packet = _recover_one(fec, missing[0], known)
                known[missing[0]] = recovered[missing[0]] = packet
                pending.remove(fec)
                progress = True
    return recovered


@dataclass
class Receiver:
    """One viewer's receive side: sorts what arrives into media and FEC by
    payload type / SSRC, as a browser's RTP receiver does."""

    media_ssrc: int
    red_payload_type: int | None = None  # RED+ULPFEC when set
    ulpfec_payload_type: int | None = None
    flexfec_ssrc: int | None = None  # FlexFEC-03 when set
    mutable_ids: frozenset[int] = frozenset()
    media: dict[int, bytes] = field(default_factory=dict)
    fecs: list[FecPacket] = field(default_factory=list)

    def receive(self, packet: bytes) -> None:
        if self.flexfec_ssrc is not None and ssrc_of(packet) == self.flexfec_ssrc:
            self.fecs.append(parse_flexfec03(packet[header_length(packet):]))
            return
        if ssrc_of(packet) != self.media_ssrc:
            raise ValueError(f"packet of unknown SSRC 0x{ssrc_of(packet):08x}")
        if self.red_payload_type is not None and payload_type_of(packet) == self.red_payload_type:
            packet = unwrap_red(packet)
            if payload_type_of(packet) == self.ulpfec_payload_type:
                self.fecs.append(parse_ulpfec(packet[header_length(packet):], ssrc_of(packet)))
                return
        self.media[seq_of(packet)] = zero_extensions(packet, self.mutable_ids)

    def recover(self) -> dict[int, bytes]:
        return recover(self.media, self.fecs)
