from rpistream.core.byteorder cimport get_be16, put_be16, put_be32
from libc.stdint cimport uint16_t, uint32_t, uint64_t


cdef extern from "fec.h" nogil:
    void fec_xor(unsigned char *dst, const unsigned char *src, Py_ssize_t size) noexcept


# Wire sizes the C code lays out; the Python-level constants, with their RFC
# sections, are in rpistream/core/_fec_py.py, and the twin tests hold the two equal.
cdef enum:
    FIXED_HEADER = 12                 # RFC 3550 §5.1
    MAX_PACKETS = 48                  # RFC 5109 §7.4: the long mask
    SHORT_PACKETS = 16                # RFC 5109 §7.4: the 16-bit mask
    ULPFEC_SHORT_HEADER = 10 + 4      # RFC 5109 §7.3 FEC header + §7.4 level 0, L=0
    ULPFEC_LONG_HEADER = 10 + 8       # ... L=1
    FLEXFEC_BASE_HEADER = 18          # libwebrtc FlexFEC-03: 12 base + 6 stream-specific
    BEDE = 0xBEDE                     # RFC 8285 §4.2


# One FEC packet of a group being encoded: inputs and output of fill_fec().
cdef struct FecJob:
    uint64_t mask                     # bit i ⇒ media packet i
    unsigned char *out                # header_size + protection_length bytes
    Py_ssize_t header_size
    Py_ssize_t protection_length


cdef Py_ssize_t flexfec_header_size(uint64_t mask, Py_ssize_t media_count) noexcept nogil
cdef void fill_fec(FecJob *job, const unsigned char **data, const Py_ssize_t *lengths,
                   Py_ssize_t media_count, bint flexfec) noexcept nogil


cdef class FecPayload:
    cdef bytes _payload
    cdef bint _flexfec
    cdef Py_ssize_t _ext_offset       # where extension elements go, from the parity start
    cdef readonly int count
    cdef readonly object mask
    cdef readonly int protection_length
    cdef readonly int header_size
    cdef readonly int ext_room
    cdef readonly str scheme

    cdef int _patch(self, unsigned char *out, long long sn_base, long long media_ssrc,
                    long long payload_type, object ext) except -1
