from rpistream.core.byteorder cimport get_be16, put_be16, put_be32
from libc.stdint cimport uint16_t, uint32_t


cdef extern from "rtp.h" nogil:
    Py_ssize_t rtp_find_start_code(const unsigned char *data, Py_ssize_t start,
                                   Py_ssize_t size) noexcept


# Wire sizes the C code lays out. The Python-level constants, with their RFC
# sections, are in rpistream/core/_rtp_py.py; the tests that compare the two
# implementations byte for byte hold them equal.
cdef enum:
    FIXED_HEADER = 12           # RFC 3550 §5.1
    EXT_BLOCK_HEADER = 4        # RFC 8285 §4.2: 0xBEDE + length in words
    MAX_HEADER = 12 + 4 + 252   # fixed header + extension block at its largest
    VP8_DESCRIPTOR = 4          # RFC 7741 §4.2
    NAL_TYPE_STAP_A = 24        # RFC 6184 §5.7.1
    NAL_TYPE_FU_A = 28          # RFC 6184 §5.8
    STAP_A_HEADER = 1
    STAP_A_LENGTH = 2
    FU_A_HEADER = 2
    MARKER_BIT = 0x80


# Cursor over a batch being laid out: packets are appended one after another.
cdef struct Layout:
    unsigned char *data
    Py_ssize_t *offsets
    Py_ssize_t packets
    Py_ssize_t position
    const unsigned char *header
    Py_ssize_t header_size


cdef unsigned char *begin_packet(Layout *layout) noexcept nogil
cdef void finish_frame(Layout *layout) noexcept nogil
cdef void layout_vp8(Layout *layout, const unsigned char *frame, Py_ssize_t size,
                     Py_ssize_t count, uint16_t picture_id) noexcept nogil
cdef Py_ssize_t find_nals(const unsigned char *data, Py_ssize_t size,
                          Py_ssize_t *nals, Py_ssize_t capacity) noexcept nogil
cdef Py_ssize_t h264_group_end(const Py_ssize_t *nals, Py_ssize_t first,
                               Py_ssize_t count, Py_ssize_t max_payload) noexcept nogil
cdef void h264_plan(const Py_ssize_t *nals, Py_ssize_t count, Py_ssize_t max_payload,
                    Py_ssize_t header_size, Py_ssize_t *packets,
                    Py_ssize_t *nbytes) noexcept nogil
cdef void layout_h264(Layout *layout, const unsigned char *frame, const Py_ssize_t *nals,
                      Py_ssize_t count, Py_ssize_t max_payload) noexcept nogil
cdef void layout_fu_a(Layout *layout, const unsigned char *nal, Py_ssize_t length,
                      Py_ssize_t max_payload) noexcept nogil


cdef class PacketBatch:
    cdef void *_block              # the one allocation: offsets, then the packets
    cdef Py_ssize_t *_offsets      # packet i is _data[_offsets[i]:_offsets[i + 1]]
    cdef unsigned char *_data
    cdef Py_ssize_t _count
    cdef Py_ssize_t _header_size   # fixed header + extension block
    cdef Py_ssize_t _ext_room
    cdef readonly uint32_t timestamp
    cdef readonly bint keyframe

    cdef Layout _layout(self, const unsigned char *header) noexcept
    cdef Py_ssize_t _start(self, Py_ssize_t index) except -1
    cdef bytes _copy(self, Py_ssize_t index, long long payload_type, long long ssrc,
                     long long seq, object ext, bint rtx, long long original_seq,
                     bint red=*, long long media_payload_type=*)


cdef class _Packetizer:
    cdef readonly int mtu
    cdef readonly int ext_room
    cdef readonly int headroom
    cdef readonly int max_payload
    cdef Py_ssize_t _header_size

    cdef int _fill_header(self, unsigned char *header, object timestamp) except -1
    cdef PacketBatch _new_batch(self, Py_ssize_t count, Py_ssize_t nbytes,
                                object timestamp, object keyframe)


cdef class Vp8Packetizer(_Packetizer):
    cdef uint16_t _picture_id


cdef class H264Packetizer(_Packetizer):
    cdef Py_ssize_t *_nals         # (start, end) of each NAL of the current frame
    cdef Py_ssize_t _nal_capacity  # pairs _nals has room for; grows, never shrinks

    cdef Py_ssize_t _find_nals(self, const unsigned char *data, Py_ssize_t size) except -2
