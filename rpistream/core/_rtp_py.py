"""Pure-Python twin of the compiled RTP packetizers (ext/rpistream/core/_rtp.pyx).

A frame is packetized once into a PacketBatch: complete RTP packets laid out
back to back in one buffer, with the camera-wide 90 kHz timestamp written and
the per-viewer fields (payload type, sequence number, SSRC, header-extension
values) left as zero placeholders. Each viewer then gets its own copy of a
packet from `write()` or `write_rtx()`: one copy plus a header patch. Same
bytes out as the extension, byte for byte; the tests hold both to that.
"""

from __future__ import annotations

import struct

from rpistream.core.rtp_format import (
    ONE_BYTE_EXT_HEADER,
    RTP_HEADER_SIZE,
    check_ext,
    check_range,
    frame_bytes,
    geometry,
    split_annexb,
)

VP8_DESCRIPTOR_SIZE = 4  # RFC 7741 §4.2: X|S|PID, I, M + 15-bit PictureID
_VP8_FIRST = bytes((0x90, 0x80))  # X=1, S=1, PID=0; I=1
_VP8_OTHER = bytes((0x80, 0x80))  # X=1, S=0, PID=0; I=1
_PICTURE_ID_LONG = 0x8000  # RFC 7741 §4.2: M=1, the PictureID is 15 bits

STAP_A = 24  # RFC 6184 §5.7.1
FU_A = 28  # RFC 6184 §5.8
STAP_A_HEADER_SIZE = 1  # RFC 6184 §5.7.1: one NAL header for the aggregate
STAP_A_LENGTH_SIZE = 2  # RFC 6184 §5.7.1: 16-bit size before each NAL
FU_A_HEADER_SIZE = 2  # RFC 6184 §5.8: FU indicator + FU header

_FIXED_HEADER = struct.Struct("!BBHII")  # RFC 3550 §5.1: V|P|X|CC, M|PT, seq, ts, ssrc
_SEQ = struct.Struct("!H")
_SSRC_AT = 8
_MARKER = 0x80


def _balanced(total: int, limit: int) -> tuple[int, int, int]:
    """Split `total` bytes into the fewest chunks of at most `limit` bytes, sizes
    differing by at most one (like libwebrtc: even packets protect better under
    FEC). Returns (chunks, base size, how many of the first chunks get one more)."""
    chunks = -(-total // limit)
    return chunks, total // chunks, total % chunks


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
        check_range("payload_type", payload_type, 0, 127)
        check_range("ssrc", ssrc, 0, 0xFFFFFFFF)
        check_range("seq", seq, 0, 0xFFFF)
        check_ext(len(ext), self._ext_room)
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
        check_range("original_seq", original_seq, 0, 0xFFFF)
        check_range("red_block_type", red_block_type, -1, 127)
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
        check_range("media_payload_type", media_payload_type, 0, 127)
        return b"".join((header, bytes((media_payload_type,)),
                         self._view[start + self._header_size:end]))


class _Packetizer:
    """MTU arithmetic and the RTP header template shared by both codecs."""

    def __init__(self, mtu: int = 1200, ext_room: int = 0, headroom: int | None = None):
        ext_room, header_size, headroom, max_payload = geometry(mtu, ext_room, headroom)
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
        check_range("timestamp", timestamp, 0, 0xFFFFFFFF)
        first_byte = 0x90 if self.ext_room else 0x80
        return _FIXED_HEADER.pack(first_byte, 0, 0, timestamp, 0) + self._ext_block

    def _batch(self, buffer: bytearray, offsets: list[int], timestamp: int,
               keyframe: bool) -> PacketBatch:
        # RFC 6184 §5.1 / RFC 7741 §4.1: the marker bit ends the frame.
        buffer[offsets[-2] + 1] |= _MARKER
        return PacketBatch(buffer, offsets, self._header_size, self.ext_room,
                           timestamp, bool(keyframe))


class Vp8Packetizer(_Packetizer):
    """RFC 7741 VP8 packetizer. One per stream: the PictureID counts its frames,
    starting at 0. Not thread-safe."""

    def __init__(self, mtu: int = 1200, ext_room: int = 0, headroom: int | None = None):
        super().__init__(mtu, ext_room, headroom)
        self._picture_id = 0

    def packetize(self, frame, timestamp: int, keyframe: bool) -> PacketBatch:
        data = frame_bytes(frame)
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
        view = frame_bytes(frame)
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
