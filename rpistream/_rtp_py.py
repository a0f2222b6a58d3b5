"""Pure-Python twin of the compiled RTP packetizers (ext/rpistream/_rtp.pyx).

A frame is packetized once into a PacketBatch: complete RTP packets laid out
back to back in one buffer, with the camera-wide 90 kHz timestamp written and
the per-viewer fields (payload type, sequence number, SSRC, header-extension
values) left as zero placeholders. Each viewer then gets its own copy of a
packet from `write()` or `write_rtx()`: one copy plus a header patch. Same
bytes out as the extension, byte for byte; the tests hold both to that.
"""

from __future__ import annotations

import struct

from rpistream import h264

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

VP8_DESCRIPTOR_SIZE = 4  # RFC 7741 §4.2: X|S|PID, I, M + 15-bit PictureID
_VP8_FIRST = bytes((0x90, 0x80))  # X=1, S=1, PID=0; I=1
_VP8_OTHER = bytes((0x80, 0x80))  # X=1, S=0, PID=0; I=1
_PICTURE_ID_LONG = 0x8000  # RFC 7741 §4.2: M=1, the PictureID is 15 bits

STAP_A = 24  # RFC 6184 §5.7.1
FU_A = 28  # RFC 6184 §5.8
STAP_A_HEADER_SIZE = 1  # RFC 6184 §5.7.1: one NAL header for the aggregate
STAP_A_LENGTH_SIZE = 2  # RFC 6184 §5.7.1: 16-bit size before each NAL
FU_A_HEADER_SIZE = 2  # RFC 6184 §5.8: FU indicator + FU header
_START_CODE = b"\x00\x00\x01"  # ITU-T H.264 Annex B.1

_FIXED_HEADER = struct.Struct("!BBHII")  # RFC 3550 §5.1: V|P|X|CC, M|PT, seq, ts, ssrc
_SEQ = struct.Struct("!H")
_SSRC_AT = 8
_MARKER = 0x80


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}, got {value}")


def _check_ext(length: int, ext_room: int) -> None:
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


def _geometry(mtu: int, ext_room: int, room) -> tuple[int, int, int, int]:
    """(ext_room rounded up, RTP header size, headroom, max payload) for a
    packetizer; headroom None leaves room for any FEC scheme and RTX."""
    _check_range("mtu", mtu, MIN_MTU, MAX_MTU)
    _check_range("ext_room", ext_room, 0, MAX_EXT_ROOM)
    if room is None:
        room = headroom(ext_room, rtx=True, ulpfec=True, flexfec=True)
    _check_range("headroom", room, 0, mtu)
    header_size = RTP_HEADER_SIZE + ext_block_size(ext_room)
    max_payload = mtu - room - header_size
    if max_payload < MIN_PAYLOAD:
        raise ValueError(f"mtu={mtu} leaves {max_payload} bytes of payload after "
                         f"headroom={room} and {header_size} bytes of RTP header and "
                         f"extensions; at least {MIN_PAYLOAD} are needed")
    return (ext_room + 3) & ~3, header_size, room, max_payload


def _balanced(total: int, limit: int) -> tuple[int, int, int]:
    """Split `total` bytes into the fewest chunks of at most `limit` bytes, sizes
    differing by at most one (like libwebrtc: even packets protect better under
    FEC). Returns (chunks, base size, how many of the first chunks get one more)."""
    chunks = -(-total // limit)
    return chunks, total // chunks, total % chunks


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


class PacketBatch:
    """The RTP packets of one frame, laid out once, shared by every viewer."""

    __slots__ = ("_buffer", "_view", "_offsets", "_header_size", "_ext_room",
                 "_timestamp", "_keyframe")

    def __init__(self, buffer: bytearray, offsets: list[int], header_size: int,
                 ext_room: int, timestamp: int, keyframe: bool):
        self._buffer = buffer
        self._view = memoryview(buffer).toreadonly()
        self._offsets = offsets
        self._header_size = header_size
        self._ext_room = ext_room
        self._timestamp = timestamp
        self._keyframe = keyframe

    @property
    def timestamp(self) -> int:
        return self._timestamp

    @property
    def keyframe(self) -> bool:
        return self._keyframe

    @property
    def nbytes(self) -> int:
        return len(self._buffer)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __repr__(self) -> str:
        return (f"PacketBatch({len(self)} packets, {self.nbytes} bytes, "
                f"timestamp={self._timestamp}, keyframe={self._keyframe})")

    def _bounds(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self._offsets) - 1:
            raise IndexError(f"packet index {index} is out of range for a batch of "
                             f"{len(self._offsets) - 1} packets")
        return self._offsets[index], self._offsets[index + 1]

    def packet(self, index: int) -> memoryview:
        """Packet `index` as laid out: PT, sequence number and SSRC are zero."""
        start, end = self._bounds(index)
        return self._view[start:end]

    def _header(self, start: int, payload_type: int, ssrc: int, seq: int,
                ext: bytes) -> bytes:
        """RFC 3550 §5.1 header (+ RFC 8285 §4.2 extension block) for one viewer."""
        _check_range("payload_type", payload_type, 0, 127)
        _check_range("ssrc", ssrc, 0, 0xFFFFFFFF)
        _check_range("seq", seq, 0, 0xFFFF)
        _check_ext(len(ext), self._ext_room)
        view = self._view
        header = _FIXED_HEADER.pack(view[start], (view[start + 1] & _MARKER) | payload_type,
                                    seq, self._timestamp, ssrc)
        if not self._ext_room:
            return header
        # The room is all zeros in the batch: zero bytes are padding (RFC 8285 §4.2).
        ext_block = view[start + RTP_HEADER_SIZE:start + RTP_HEADER_SIZE + ONE_BYTE_EXT_HEADER]
        return b"".join((header, ext_block, ext, bytes(self._ext_room - len(ext))))

    def write(self, index: int, payload_type: int, ssrc: int, seq: int,
              ext: bytes = b"") -> bytes:
        """Packet `index` for one viewer: its payload type, SSRC, sequence number and
        one-byte header-extension elements `ext`. Same length as `packet(index)`."""
        start, end = self._bounds(index)
        header = self._header(start, payload_type, ssrc, seq, ext)
        return header + self._view[start + self._header_size:end]

    def write_rtx(self, index: int, payload_type: int, ssrc: int, seq: int,
                  original_seq: int, ext: bytes = b"", red_block_type: int = -1) -> bytes:
        """RFC 4588 §4 retransmission of packet `index`: RTX payload type, SSRC and
        sequence number, the original timestamp and marker, then the original
        sequence number (OSN) before the original payload. With red_block_type
        >= 0 the original was its write_red(): the RTX payload is the OSN and
        then that RED payload (block header F=0|red_block_type, media payload)."""
        start, end = self._bounds(index)
        header = self._header(start, payload_type, ssrc, seq, ext)
        _check_range("original_seq", original_seq, 0, 0xFFFF)
        _check_range("red_block_type", red_block_type, -1, 127)
        red = bytes((red_block_type,)) if red_block_type >= 0 else b""
        return b"".join((header, _SEQ.pack(original_seq), red,
                         self._view[start + self._header_size:end]))

    def write_red(self, index: int, red_payload_type: int, media_payload_type: int,
                  ssrc: int, seq: int, ext: bytes = b"") -> bytes:
        """RFC 2198 §3 RED packet (primary block only) carrying packet `index`: the
        header with PT=red and the extension block, the block header F=0|media PT,
        then the media payload. As libwebrtc's RED for ULPFEC (rtp_sender_video.cc
        BuildRedPayload): header extensions stay in the outer header; unwrapped
        (outer header with the media PT, payload after the block header) it is
        write(index, media_payload_type, ...), the packet ULPFEC protects."""
        start, end = self._bounds(index)
        header = self._header(start, red_payload_type, ssrc, seq, ext)
        _check_range("media_payload_type", media_payload_type, 0, 127)
        return b"".join((header, bytes((media_payload_type,)),
                         self._view[start + self._header_size:end]))


class _Packetizer:
    """MTU arithmetic and the RTP header template shared by both codecs."""

    def __init__(self, mtu: int = 1200, ext_room: int = 0, headroom: int | None = None):
        ext_room, header_size, headroom, max_payload = _geometry(mtu, ext_room, headroom)
        self.mtu = mtu
        self.ext_room = ext_room
        self.headroom = headroom
        self.max_payload = max_payload
        self._header_size = header_size
        # RFC 8285 §4.2: one-byte-header extension block, its elements zero (padding).
        self._ext_block = (struct.pack("!HH", 0xBEDE, ext_room // 4) + bytes(ext_room)
                           if ext_room else b"")

    def _template(self, timestamp: int) -> bytes:
        """RFC 3550 §5.1 header: V=2, X if extensions, PT/seq/SSRC zero per viewer."""
        _check_range("timestamp", timestamp, 0, 0xFFFFFFFF)
        first_byte = 0x90 if self.ext_room else 0x80
        return _FIXED_HEADER.pack(first_byte, 0, 0, timestamp, 0) + self._ext_block

    def _batch(self, buffer: bytearray, offsets: list[int], timestamp: int,
               keyframe: bool) -> PacketBatch:
        # RFC 6184 §5.1 / RFC 7741 §4.1: the marker bit ends the frame.
        buffer[offsets[-2] + 1] |= _MARKER
        return PacketBatch(buffer, offsets, self._header_size, self.ext_room,
                           timestamp, bool(keyframe))


def _frame_bytes(frame) -> memoryview:
    view = memoryview(frame).cast("B")
    if not len(view):
        raise ValueError("frame is empty: there is nothing to packetize")
    return view


class Vp8Packetizer(_Packetizer):
    """RFC 7741 VP8 packetizer. One per stream: the PictureID counts its frames,
    starting at 0. Not thread-safe."""

    def __init__(self, mtu: int = 1200, ext_room: int = 0, headroom: int | None = None):
        super().__init__(mtu, ext_room, headroom)
        self._picture_id = 0

    def packetize(self, frame, timestamp: int, keyframe: bool) -> PacketBatch:
        data = _frame_bytes(frame)
        template = self._template(timestamp)
        count, base, larger = _balanced(len(data), self.max_payload - VP8_DESCRIPTOR_SIZE)
        picture_id = _SEQ.pack(_PICTURE_ID_LONG | self._picture_id)
        self._picture_id = (self._picture_id + 1) & 0x7FFF
        packet_overhead = len(template) + VP8_DESCRIPTOR_SIZE
        buffer = bytearray(count * packet_overhead + len(data))
        offsets = [0] * (count + 1)
        position = source = 0
        for index in range(count):
            size = base + (index < larger)
            offsets[index] = position
            descriptor = template + (_VP8_FIRST if index == 0 else _VP8_OTHER) + picture_id
            buffer[position:position + packet_overhead] = descriptor
            position += packet_overhead
            buffer[position:position + size] = data[source:source + size]
            position += size
            source += size
        offsets[count] = position
        return self._batch(buffer, offsets, timestamp, keyframe)


def _group_end(nals: list[tuple[int, int]], first: int, max_payload: int) -> int:
    """Index after the last NAL that travels in one packet with NAL `first`:
    first + 1 for a Single NAL Unit or FU-A, more for a STAP-A (RFC 6184 §5.7.1)."""
    start, end = nals[first]
    size = STAP_A_HEADER_SIZE + STAP_A_LENGTH_SIZE + end - start
    following = first + 1
    while following < len(nals):
        start, end = nals[following]
        size += STAP_A_LENGTH_SIZE + end - start
        if size > max_payload:
            break
        following += 1
    return following


class H264Packetizer(_Packetizer):
    """RFC 6184 H.264 packetizer, packetization-mode=1 (Single NAL, STAP-A, FU-A).
    Input: one Annex-B access unit per call."""

    def packetize(self, frame, timestamp: int, keyframe: bool) -> PacketBatch:
        view = _frame_bytes(frame)
        data = frame if type(frame) is bytes else view.tobytes()  # bytes.find for start codes
        template = self._template(timestamp)
        nals = split_annexb(data)
        max_payload = self.max_payload
        buffer = bytearray()
        offsets = []
        first = 0
        while first < len(nals):
            following = _group_end(nals, first, max_payload)
            start, end = nals[first]
            if following - first > 1:
                # RFC 6184 §5.7.1: STAP-A header F = OR of the Fs, NRI = max NRI.
                forbidden = nri = 0
                units = []
                for start, end in nals[first:following]:
                    forbidden |= data[start] & 0x80
                    nri = max(nri, data[start] & 0x60)
                    units += (_SEQ.pack(end - start), data[start:end])
                offsets.append(len(buffer))
                buffer += template
                buffer.append(forbidden | nri | STAP_A)
                buffer += b"".join(units)
            elif end - start <= max_payload:
                offsets.append(len(buffer))  # RFC 6184 §5.6: Single NAL Unit packet
                buffer += template
                buffer += data[start:end]
            else:
                self._fragment(buffer, offsets, template, data, start, end)
            first = following
        offsets.append(len(buffer))
        return self._batch(buffer, offsets, timestamp, keyframe)

    def _fragment(self, buffer: bytearray, offsets: list[int], template: bytes,
                  data: bytes, start: int, end: int) -> None:
        """RFC 6184 §5.8: FU-A fragments of one NAL; its header byte is not repeated,
        its F|NRI go in the FU indicator and its type in each FU header."""
        indicator = (data[start] & 0xE0) | FU_A
        nal_type = data[start] & 0x1F
        count, base, larger = _balanced(end - start - 1, self.max_payload - FU_A_HEADER_SIZE)
        source = start + 1
        for index in range(count):
            size = base + (index < larger)
            fu_header = nal_type | (0x80 if index == 0 else 0) | (0x40 if index == count - 1 else 0)
            offsets.append(len(buffer))
            buffer += template
            buffer.append(indicator)
            buffer.append(fu_header)
            buffer += data[source:source + size]
            source += size
