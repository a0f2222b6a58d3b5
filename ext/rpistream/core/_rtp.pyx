"""RTP packetizers for VP8 (RFC 7741) and H.264 (RFC 6184): packetize once, write per viewer.

A frame becomes a PacketBatch: complete RTP packets back to back in one
allocation, the camera-wide timestamp written, payload type / sequence number /
SSRC / extension values zero. write() and write_rtx() copy one packet for one
viewer and patch those fields. The byte-copying loops run without the GIL.
Error messages come from the pure-Python twin (rpistream/core/_rtp_py.py), the
reference this module is tested against.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport uint16_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from rpistream.core.rtp_format import (
    MAX_EXT_ROOM,
    ONE_BYTE_EXT_HEADER,
    RTP_HEADER_SIZE,
    check_ext,
    check_range,
    frame_bytes,
    geometry,
    split_annexb,
)

# The header template is a MAX_HEADER stack array: the twin's limits must fit it.
if RTP_HEADER_SIZE + ONE_BYTE_EXT_HEADER + MAX_EXT_ROOM > MAX_HEADER:
    raise ImportError(f"MAX_EXT_ROOM={MAX_EXT_ROOM} does not fit MAX_HEADER={MAX_HEADER}")

# NAL slots allocated with a new H264Packetizer; a frame with more NALs grows them.
cdef Py_ssize_t INITIAL_NAL_CAPACITY = 64


cdef unsigned char *begin_packet(Layout *layout) noexcept nogil:
    """Append the header template; return where the payload goes."""
    cdef unsigned char *packet = layout.data + layout.position
    layout.offsets[layout.packets] = layout.position
    layout.packets += 1
    memcpy(packet, layout.header, layout.header_size)
    layout.position += layout.header_size
    return packet + layout.header_size


cdef void finish_frame(Layout *layout) noexcept nogil:
    layout.offsets[layout.packets] = layout.position
    # RFC 6184 §5.1 / RFC 7741 §4.1: the marker bit ends the frame.
    layout.data[layout.offsets[layout.packets - 1] + 1] |= MARKER_BIT


cdef void layout_vp8(Layout *layout, const unsigned char *frame, Py_ssize_t size,
                     Py_ssize_t count, uint16_t picture_id) noexcept nogil:
    # Balanced, like libwebrtc: sizes differ by at most one byte, the first
    # `larger` packets carry the extra byte.
    cdef Py_ssize_t base = size // count, larger = size % count
    cdef Py_ssize_t index, chunk
    cdef unsigned char *payload
    for index in range(count):
        chunk = base + (index < larger)
        payload = begin_packet(layout)
        # RFC 7741 §4.2: X=1, S only on the first packet, PID=0; I=1; M=1 + PictureID.
        payload[0] = 0x90 if index == 0 else 0x80
        payload[1] = 0x80
        put_be16(payload + 2, 0x8000 | picture_id)
        memcpy(payload + VP8_DESCRIPTOR, frame, chunk)
        frame += chunk
        layout.position += VP8_DESCRIPTOR + chunk
    finish_frame(layout)


cdef Py_ssize_t find_nals(const unsigned char *data, Py_ssize_t size,
                          Py_ssize_t *nals, Py_ssize_t capacity) noexcept nogil:
    """Store (start, end) of up to `capacity` NALs of an Annex-B access unit;
    return how many there are (may exceed `capacity`), or -1 if `data` does not
    begin with zero bytes and a start code. Trailing zero bytes belong to the
    next start code (H.264 §B.1); empty NALs are skipped."""
    cdef Py_ssize_t position = rtp_find_start_code(data, 0, size)
    cdef Py_ssize_t start, end, index, count = 0
    if position < 0:
        return -1
    for index in range(position):
        if data[index]:
            return -1
    while position >= 0:
        start = position + 3
        position = rtp_find_start_code(data, start, size)
        end = size if position < 0 else position
        while end > start and data[end - 1] == 0:
            end -= 1
        if end > start:
            if count < capacity:
                nals[2 * count] = start
                nals[2 * count + 1] = end
            count += 1
    return count


cdef Py_ssize_t h264_group_end(const Py_ssize_t *nals, Py_ssize_t first,
                               Py_ssize_t count, Py_ssize_t max_payload) noexcept nogil:
    """Index after the last NAL that travels in one packet with NAL `first`:
    first + 1 for a Single NAL Unit or FU-A, more for a STAP-A (RFC 6184 §5.7.1)."""
    cdef Py_ssize_t size = STAP_A_HEADER + STAP_A_LENGTH + nals[2 * first + 1] - nals[2 * first]
    cdef Py_ssize_t following = first + 1
    while following < count:
        size += STAP_A_LENGTH + nals[2 * following + 1] - nals[2 * following]
        if size > max_payload:
            break
        following += 1
    return following


cdef void h264_plan(const Py_ssize_t *nals, Py_ssize_t count, Py_ssize_t max_payload,
                    Py_ssize_t header_size, Py_ssize_t *packets,
                    Py_ssize_t *nbytes) noexcept nogil:
    """Packets and bytes layout_h264() will write, so the batch is allocated once."""
    cdef Py_ssize_t first = 0, following, index, length, fragments
    packets[0] = nbytes[0] = 0
    while first < count:
        following = h264_group_end(nals, first, count, max_payload)
        length = nals[2 * first + 1] - nals[2 * first]
        if following - first > 1:
            packets[0] += 1
            nbytes[0] += header_size + STAP_A_HEADER
            for index in range(first, following):
                nbytes[0] += STAP_A_LENGTH + nals[2 * index + 1] - nals[2 * index]
        elif length <= max_payload:
            packets[0] += 1
            nbytes[0] += header_size + length
        else:
            fragments = (length - 1 + max_payload - FU_A_HEADER - 1) // (max_payload - FU_A_HEADER)
            packets[0] += fragments
            nbytes[0] += fragments * (header_size + FU_A_HEADER) + length - 1
        first = following


cdef void layout_h264(Layout *layout, const unsigned char *frame, const Py_ssize_t *nals,
                      Py_ssize_t count, Py_ssize_t max_payload) noexcept nogil:
    cdef Py_ssize_t first = 0, following, index, length
    cdef unsigned char *payload
    cdef const unsigned char *nal
    cdef unsigned char forbidden, nri
    while first < count:
        following = h264_group_end(nals, first, count, max_payload)
        nal = frame + nals[2 * first]
        length = nals[2 * first + 1] - nals[2 * first]
        if following - first > 1:
            # RFC 6184 §5.7.1: STAP-A header F = OR of the Fs, NRI = max NRI;
            # then a 16-bit size before each NAL.
            payload = begin_packet(layout)
            forbidden = nri = 0
            layout.position += STAP_A_HEADER
            for index in range(first, following):
                nal = frame + nals[2 * index]
                length = nals[2 * index + 1] - nals[2 * index]
                forbidden |= nal[0] & 0x80
                if nal[0] & 0x60 > nri:
                    nri = nal[0] & 0x60
                put_be16(layout.data + layout.position, <uint16_t>length)
                memcpy(layout.data + layout.position + STAP_A_LENGTH, nal, length)
                layout.position += STAP_A_LENGTH + length
            payload[0] = forbidden | nri | NAL_TYPE_STAP_A
        elif length <= max_payload:
            payload = begin_packet(layout)  # RFC 6184 §5.6: Single NAL Unit packet
            memcpy(payload, nal, length)
            layout.position += length
        else:
            layout_fu_a(layout, nal, length, max_payload)
        first = following
    finish_frame(layout)


cdef void layout_fu_a(Layout *layout, const unsigned char *nal, Py_ssize_t length,
                      Py_ssize_t max_payload) noexcept nogil:
    """RFC 6184 §5.8: FU-A fragments of one NAL, balanced; its header byte is not
    repeated: F|NRI go in the FU indicator, the type in each FU header."""
    cdef Py_ssize_t limit = max_payload - FU_A_HEADER, total = length - 1
    cdef Py_ssize_t count = (total + limit - 1) // limit
    cdef Py_ssize_t base = total // count, larger = total % count
    cdef Py_ssize_t index, chunk
    cdef const unsigned char *source = nal + 1
    cdef unsigned char *payload
    for index in range(count):
        chunk = base + (index < larger)
        payload = begin_packet(layout)
        payload[0] = (nal[0] & 0xE0) | NAL_TYPE_FU_A
        payload[1] = ((nal[0] & 0x1F) | (0x80 if index == 0 else 0)
                      | (0x40 if index == count - 1 else 0))
        memcpy(payload + FU_A_HEADER, source, chunk)
        source += chunk
        layout.position += FU_A_HEADER + chunk


cdef class PacketBatch:
    """The RTP packets of one frame, laid out once, shared by every viewer."""

    def __init__(self):
        # Only _Packetizer._new_batch makes batches (it bypasses __init__): an
        # empty one would have no offsets to read.
        raise TypeError("a PacketBatch comes from Vp8Packetizer/H264Packetizer.packetize()")

    def __dealloc__(self):
        free(self._block)

    def __len__(self):
        return self._count

    def __repr__(self):
        return (f"PacketBatch({self._count} packets, {self.nbytes} bytes, "
                f"timestamp={self.timestamp}, keyframe={self.keyframe})")

    @property
    def nbytes(self):
        return self._offsets[self._count]

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("a packet batch is read-only: every viewer shares it")
        view.buf = self._data
        view.obj = self
        view.len = self._offsets[self._count]
        view.readonly = 1
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = &self._offsets[self._count]  # the total length, valid as long as self
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass

    cdef Layout _layout(self, const unsigned char *header) noexcept:
        cdef Layout layout
        layout.data = self._data
        layout.offsets = self._offsets
        layout.packets = 0
        layout.position = 0
        layout.header = header
        layout.header_size = self._header_size
        return layout

    cdef Py_ssize_t _start(self, Py_ssize_t index) except -1:
        if not 0 <= index < self._count:
            raise IndexError(f"packet index {index} is out of range for a batch of "
                             f"{self._count} packets")
        return self._offsets[index]

    def packet(self, Py_ssize_t index):
        """Packet `index` as laid out: PT, sequence number and SSRC are zero."""
        cdef Py_ssize_t start = self._start(index)
        return memoryview(self)[start:self._offsets[index + 1]]

    cdef bytes _copy(self, Py_ssize_t index, long long payload_type, long long ssrc,
                     long long seq, object ext, bint rtx, long long original_seq,
                     bint red=False, long long media_payload_type=0):
        """One allocation + one copy + the header patch (RFC 3550 §5.1); for RTX
        (RFC 4588 §4) the original sequence number goes before the payload, for
        RED (RFC 2198 §3) the primary block header."""
        cdef Py_ssize_t start = self._start(index)
        cdef Py_ssize_t length = self._offsets[index + 1] - start
        cdef Py_ssize_t header_size = self._header_size
        cdef Py_ssize_t inserted = 2 * rtx + red
        cdef const unsigned char *source = self._data + start
        cdef Py_buffer ext_view
        cdef const unsigned char *ext_data = NULL
        cdef Py_ssize_t ext_length
        cdef unsigned char *out
        if not 0 <= payload_type <= 127:
            check_range("payload_type", payload_type, 0, 127)
        if not 0 <= ssrc <= 0xFFFFFFFF:
            check_range("ssrc", ssrc, 0, 0xFFFFFFFF)
        if not 0 <= seq <= 0xFFFF:
            check_range("seq", seq, 0, 0xFFFF)
        if PyBytes_CheckExact(ext):
            ext_data = <const unsigned char *>PyBytes_AS_STRING(ext)
            ext_length = PyBytes_GET_SIZE(ext)
        else:
            PyObject_GetBuffer(ext, &ext_view, PyBUF_SIMPLE)
            ext_length = ext_view.len
        try:
            if ext_length > self._ext_room:
                check_ext(ext_length, self._ext_room)
            if rtx and not 0 <= original_seq <= 0xFFFF:
                check_range("original_seq", original_seq, 0, 0xFFFF)
            if red and not 0 <= media_payload_type <= 127:
                check_range("media_payload_type", media_payload_type, 0, 127)
            result = PyBytes_FromStringAndSize(NULL, length + inserted)
            out = <unsigned char *>PyBytes_AS_STRING(result)
            if inserted:
                memcpy(out, source, header_size)
                if rtx:
                    put_be16(out + header_size, <uint16_t>original_seq)
                if red:  # F=0: the primary block, after the OSN in RTX of RED
                    out[header_size + 2 * rtx] = <unsigned char>media_payload_type
                memcpy(out + header_size + inserted, source + header_size, length - header_size)
            else:
                memcpy(out, source, length)
            out[1] = (out[1] & MARKER_BIT) | <unsigned char>payload_type
            put_be16(out + 2, <uint16_t>seq)
            put_be32(out + 8, <uint32_t>ssrc)
            if ext_length:
                # The room was all zeros (padding, RFC 8285 §4.2): elements go first.
                memcpy(out + FIXED_HEADER + EXT_BLOCK_HEADER,
                       ext_data if ext_data != NULL else <const unsigned char *>ext_view.buf,
                       ext_length)
        finally:
            if ext_data == NULL:
                PyBuffer_Release(&ext_view)
        return result

    def write(self, Py_ssize_t index, long long payload_type, long long ssrc,
              long long seq, ext=b""):
        """Packet `index` for one viewer: its payload type, SSRC, sequence number and
        one-byte header-extension elements `ext`. Same length as `packet(index)`."""
        return self._copy(index, payload_type, ssrc, seq, ext, False, 0)

    def write_rtx(self, Py_ssize_t index, long long payload_type, long long ssrc,
                  long long seq, long long original_seq, ext=b"",
                  long long red_block_type=-1):
        """RFC 4588 §4 retransmission of packet `index`: RTX payload type, SSRC and
        sequence number, the original timestamp and marker, then the original
        sequence number (OSN) before the original payload. With red_block_type
        >= 0 the original was its write_red(): the RTX payload is the OSN and
        then that RED payload (block header F=0|red_block_type, media payload)."""
        if not -1 <= red_block_type <= 127:
            check_range("red_block_type", red_block_type, -1, 127)
        return self._copy(index, payload_type, ssrc, seq, ext, True, original_seq,
                          red_block_type >= 0, red_block_type)

    def write_red(self, Py_ssize_t index, long long red_payload_type,
                  long long media_payload_type, long long ssrc, long long seq, ext=b""):
        """RFC 2198 §3 RED packet (primary block only) carrying packet `index`: the
        header with PT=red and the extension block, the block header F=0|media PT,
        then the media payload. As libwebrtc's RED for ULPFEC (rtp_sender_video.cc
        BuildRedPayload): header extensions stay in the outer header; unwrapped
        (outer header with the media PT, payload after the block header) it is
        write(index, media_payload_type, ...), the packet ULPFEC protects."""
        return self._copy(index, red_payload_type, ssrc, seq, ext, False, 0, True,
                          media_payload_type)


cdef class _Packetizer:
    """MTU arithmetic and the RTP header template shared by both codecs."""

    def __init__(self, mtu=1200, ext_room=0, headroom=None):
        ext_room, header_size, headroom, max_payload = geometry(mtu, ext_room, headroom)
        self.mtu = mtu
        self.ext_room = ext_room
        self.headroom = headroom
        self.max_payload = max_payload
        self._header_size = header_size

    cdef int _fill_header(self, unsigned char *header, object timestamp) except -1:
        """RFC 3550 §5.1 header: V=2, X if extensions, PT/seq/SSRC zero per viewer;
        RFC 8285 §4.2 one-byte-header extension block with zero (padding) elements."""
        if not 0 <= timestamp <= 0xFFFFFFFF:
            check_range("timestamp", timestamp, 0, 0xFFFFFFFF)
        memset(header, 0, self._header_size)
        header[0] = 0x90 if self.ext_room else 0x80
        put_be32(header + 4, <uint32_t>timestamp)
        if self.ext_room:
            put_be16(header + FIXED_HEADER, 0xBEDE)
            put_be16(header + FIXED_HEADER + 2, <uint16_t>(self.ext_room // 4))
        return 0

    cdef PacketBatch _new_batch(self, Py_ssize_t count, Py_ssize_t nbytes,
                                object timestamp, object keyframe):
        """An empty batch: offsets and packets in one allocation."""
        # The offsets come first, rounded to 64 bytes so the packets start on a cache line.
        cdef Py_ssize_t offsets_size = ((count + 1) * sizeof(Py_ssize_t) + 63) & ~63
        cdef PacketBatch batch = PacketBatch.__new__(PacketBatch)
        batch._block = malloc(offsets_size + nbytes)
        if batch._block == NULL:
            raise MemoryError(f"no memory for a batch of {count} packets, {nbytes} bytes")
        batch._offsets = <Py_ssize_t *>batch._block
        batch._data = <unsigned char *>batch._block + offsets_size
        batch._count = count
        batch._header_size = self._header_size
        batch._ext_room = self.ext_room
        batch.timestamp = <uint32_t>timestamp
        batch.keyframe = bool(keyframe)
        return batch


cdef class Vp8Packetizer(_Packetizer):
    """RFC 7741 VP8 packetizer. One per stream: the PictureID counts its frames,
    starting at 0. Not thread-safe."""

    def packetize(self, frame, timestamp, keyframe):
        cdef Py_buffer view
        cdef unsigned char header[MAX_HEADER]
        cdef Py_ssize_t chunk_limit = self.max_payload - VP8_DESCRIPTOR
        cdef Py_ssize_t count
        cdef Layout layout
        cdef PacketBatch batch
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                frame_bytes(frame)
            self._fill_header(header, timestamp)
            count = (view.len + chunk_limit - 1) // chunk_limit
            batch = self._new_batch(
                count, count * (self._header_size + VP8_DESCRIPTOR) + view.len,
                timestamp, keyframe)
            layout = batch._layout(header)
            with nogil:
                layout_vp8(&layout, <const unsigned char *>view.buf, view.len, count,
                           self._picture_id)
            self._picture_id = (self._picture_id + 1) & 0x7FFF
        finally:
            PyBuffer_Release(&view)
        return batch


cdef class H264Packetizer(_Packetizer):
    """RFC 6184 H.264 packetizer, packetization-mode=1 (Single NAL, STAP-A, FU-A).
    Input: one Annex-B access unit per call. Not thread-safe."""

    def __dealloc__(self):
        PyMem_Free(self._nals)

    cdef Py_ssize_t _find_nals(self, const unsigned char *data, Py_ssize_t size) except -2:
        cdef Py_ssize_t count
        cdef Py_ssize_t *grown
        with nogil:
            count = find_nals(data, size, self._nals, self._nal_capacity)
        if count > self._nal_capacity:
            grown = <Py_ssize_t *>PyMem_Realloc(
                self._nals, 2 * max(count, INITIAL_NAL_CAPACITY) * sizeof(Py_ssize_t))
            if grown == NULL:
                raise MemoryError(f"no memory for the positions of {count} NAL units")
            self._nals = grown
            self._nal_capacity = max(count, INITIAL_NAL_CAPACITY)
            with nogil:
                count = find_nals(data, size, self._nals, self._nal_capacity)
        return count

    def packetize(self, frame, timestamp, keyframe):
        cdef Py_buffer view
        cdef unsigned char header[MAX_HEADER]
        cdef const unsigned char *data
        cdef Py_ssize_t nal_count, packets, nbytes
        cdef Layout layout
        cdef PacketBatch batch
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            data = <const unsigned char *>view.buf
            if view.len == 0:
                frame_bytes(frame)
            self._fill_header(header, timestamp)
            nal_count = self._find_nals(data, view.len)
            if nal_count <= 0:
                split_annexb(bytes(frame))  # raises, worded by the twin
                raise ValueError("H.264 access unit contains no NAL unit")
            with nogil:
                h264_plan(self._nals, nal_count, self.max_payload, self._header_size,
                          &packets, &nbytes)
            batch = self._new_batch(packets, nbytes, timestamp, keyframe)
            layout = batch._layout(header)
            with nogil:
                layout_h264(&layout, data, self._nals, nal_count, self.max_payload)
        finally:
            PyBuffer_Release(&view)
        return batch


__all__ = ["H264Packetizer", "PacketBatch", "Vp8Packetizer"]
