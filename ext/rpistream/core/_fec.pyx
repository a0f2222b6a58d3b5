"""FEC for RTP: ULPFEC (RFC 5109) and FlexFEC-03 as libwebrtc writes it.

Parity is computed once per group of laid-out media packets (PacketBatch.packet(i))
and shared by every viewer; FecPayload.write() patches one viewer's fields in
a copy. The XOR loops (fec.h, 16-byte vector lanes, unaligned loads through
memcpy) run without the GIL. The wire layouts, the reasons the patches are
right, and the error messages live in the pure-Python twin
(rpistream/core/_fec_py.py), the reference this module is tested against.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from rpistream.core.fec_format import (
    EXT_WHAT,
    FLEXFEC_BASE_HEADER_SIZE,
    MAX_MEDIA_PACKETS,
    MAX_PACKET_SIZE,
    SCHEMES,
    SHORT_MASK_PACKETS,
    ULPFEC_HEADER_SIZE,
    ULPFEC_LEVEL0_LONG,
    ULPFEC_LEVEL0_SHORT,
    check_ext_room,
    check_group,
    check_scheme,
    mask_error,
    packet_error,
)
from rpistream.core.rtp_format import check_range

# The C layout must agree with the twin's constants.
if (MAX_MEDIA_PACKETS, SHORT_MASK_PACKETS, FLEXFEC_BASE_HEADER_SIZE,
        ULPFEC_HEADER_SIZE + ULPFEC_LEVEL0_SHORT, ULPFEC_HEADER_SIZE + ULPFEC_LEVEL0_LONG) != (
        MAX_PACKETS, SHORT_PACKETS, FLEXFEC_BASE_HEADER, ULPFEC_SHORT_HEADER, ULPFEC_LONG_HEADER):
    raise ImportError("ext/rpistream/core/_fec.pxd and rpistream/core/_fec_py.py disagree on FEC sizes")



cdef inline uint64_t wire_mask(uint64_t mask) noexcept nogil:
    """RFC 5109 §7.4 order: packet i ⇒ bit 47 - i of a 48-bit field."""
    cdef uint64_t wire = 0
    cdef int i
    for i in range(MAX_PACKETS):
        if (mask >> i) & 1:
            wire |= (<uint64_t>1) << (47 - i)
    return wire


cdef Py_ssize_t flexfec_header_size(uint64_t mask, Py_ssize_t media_count) noexcept nogil:
    """libwebrtc's choice (MinPacketMaskSize): K-bit 0 while a 16-bit mask leaves
    bit 15 clear, K-bit 1 while a 48-bit mask leaves bits 46 and 47 clear."""
    if media_count <= SHORT_PACKETS:
        return FLEXFEC_BASE_HEADER + (2 if not (mask >> 15) & 1 else 6)
    return FLEXFEC_BASE_HEADER + (6 if not (mask >> 46) & 3 else 14)


cdef void fill_fec(FecJob *job, const unsigned char **data, const Py_ssize_t *lengths,
                   Py_ssize_t media_count, bint flexfec) noexcept nogil:
    cdef unsigned char *out = job.out
    cdef unsigned char *parity = out + job.header_size
    cdef unsigned char byte0 = 0, byte1 = 0
    cdef unsigned char timestamp[4]
    cdef uint16_t length = 0
    cdef bint first = True
    cdef Py_ssize_t i, size
    cdef const unsigned char *source
    cdef uint64_t wire
    memset(timestamp, 0, 4)
    for i in range(media_count):
        if not (job.mask >> i) & 1:
            continue
        source = data[i]
        size = lengths[i] - FIXED_HEADER
        byte0 ^= source[0]
        byte1 ^= source[1]
        timestamp[0] ^= source[4]
        timestamp[1] ^= source[5]
        timestamp[2] ^= source[6]
        timestamp[3] ^= source[7]
        length ^= <uint16_t>size
        if first:
            memcpy(parity, source + FIXED_HEADER, size)
            memset(parity + size, 0, job.protection_length - size)
            first = False
        else:
            fec_xor(parity, source + FIXED_HEADER, size)
    memset(out, 0, job.header_size)
    wire = wire_mask(job.mask)
    out[1] = byte1
    memcpy(out + 4, timestamp, 4)
    if flexfec:
        out[0] = byte0 & 0x3F  # R=0, F=0
        put_be16(out + 2, length)
        out[8] = 1  # SSRCCount; reserved, protected SSRC and SN base: zero
        if job.header_size == FLEXFEC_BASE_HEADER + 2:
            put_be16(out + 18, <uint16_t>(0x8000 | ((wire >> 33) & 0x7FFF)))
        elif job.header_size == FLEXFEC_BASE_HEADER + 6:
            put_be16(out + 18, <uint16_t>((wire >> 33) & 0x7FFF))
            put_be32(out + 20, <uint32_t>((<uint64_t>1 << 31) | ((wire >> 2) & 0x7FFFFFFF)))
        else:
            put_be16(out + 18, <uint16_t>((wire >> 33) & 0x7FFF))
            put_be32(out + 20, <uint32_t>((wire >> 2) & 0x7FFFFFFF))
            out[24] = 0x80 | <unsigned char>((wire & 3) << 5)
    else:
        # RFC 5109 §7.3: E=0, L, P/X/CC recovery; SN base zero; §7.4 level 0.
        out[0] = (byte0 & 0x3F) | (0x40 if job.header_size == ULPFEC_LONG_HEADER else 0)
        put_be16(out + 8, length)
        put_be16(out + 10, <uint16_t>job.protection_length)
        put_be16(out + 12, <uint16_t>(wire >> 32))
        if job.header_size == ULPFEC_LONG_HEADER:
            put_be32(out + 14, <uint32_t>wire)


cdef inline void ext_layout(const unsigned char *packet, Py_ssize_t length,
                            Py_ssize_t *offset, Py_ssize_t *room) noexcept nogil:
    """As the twin's _ext_layout: elements' offset from byte 12, and their room."""
    cdef Py_ssize_t block = FIXED_HEADER + 4 * (packet[0] & 0x0F)
    offset[0] = block - FIXED_HEADER + 4
    room[0] = 0
    if packet[0] & 0x10 and length >= block + 4 and get_be16(packet + block) == BEDE:
        room[0] = 4 * get_be16(packet + block + 2)
        if room[0] > length - block - 4:
            room[0] = length - block - 4


cdef class FecPayload:
    """One FEC packet's payload (the bytes after its RTP header; for ULPFEC
    before RED wrapping), computed once for every viewer of a camera."""

    def __init__(self):
        raise TypeError("a FecPayload comes from encode()")

    @property
    def payload(self):
        """The shared payload: SN base, protected SSRC 0; media PT and extension
        elements as in the laid-out packets (zero)."""
        return self._payload

    def __len__(self):
        return PyBytes_GET_SIZE(self._payload)

    def __repr__(self):
        return (f"FecPayload({self.scheme}, {self.count} packets, mask=0x{self.mask:x}, "
                f"{len(self._payload)} bytes)")

    cdef int _patch(self, unsigned char *out, long long sn_base, long long media_ssrc,
                    long long payload_type, object ext) except -1:
        cdef Py_buffer ext_view
        cdef const unsigned char *ext_data
        cdef Py_ssize_t ext_length
        cdef bint release = False
        if not 0 <= sn_base <= 0xFFFF:
            check_range("sn_base", sn_base, 0, 0xFFFF)
        if not 0 <= media_ssrc <= 0xFFFFFFFF:
            check_range("media_ssrc", media_ssrc, 0, 0xFFFFFFFF)
        if not 0 <= payload_type <= 127:
            check_range("payload_type", payload_type, 0, 127)
        if PyBytes_CheckExact(ext):
            ext_data = <const unsigned char *>PyBytes_AS_STRING(ext)
            ext_length = PyBytes_GET_SIZE(ext)
        else:
            PyObject_GetBuffer(ext, &ext_view, PyBUF_SIMPLE)
            release = True
            ext_data = <const unsigned char *>ext_view.buf
            ext_length = ext_view.len
        try:
            if ext_length > self.ext_room:
                check_ext_room(ext_length, self.ext_room, EXT_WHAT)
            if self.count & 1:
                # Odd k: the viewer's PT and extension elements do not cancel out.
                out[1] ^= <unsigned char>payload_type
                if ext_length:
                    fec_xor(out + self.header_size + self._ext_offset, ext_data, ext_length)
        finally:
            if release:
                PyBuffer_Release(&ext_view)
        if self._flexfec:
            put_be32(out + 12, <uint32_t>media_ssrc)
            put_be16(out + 16, <uint16_t>sn_base)
        else:
            put_be16(out + 2, <uint16_t>sn_base)  # RFC 5109 §7.3: SN base
        return 0

    def write(self, long long sn_base, long long media_ssrc, long long payload_type,
              ext=b""):
        """This payload for one viewer: `sn_base` its sequence number of the group's
        first packet, `media_ssrc` and `payload_type` its media stream's (the SSRC
        is written by FlexFEC only: ULPFEC protects its own SSRC), `ext` the
        extension elements it writes into the media packets, mutable values zeroed."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self._payload)
        result = PyBytes_FromStringAndSize(NULL, size)
        cdef unsigned char *out = <unsigned char *>PyBytes_AS_STRING(result)
        memcpy(out, PyBytes_AS_STRING(self._payload), size)
        self._patch(out, sn_base, media_ssrc, payload_type, ext)
        return result

    def write_packet(self, header, long long sn_base, long long media_ssrc,
                     long long payload_type, ext=b"", long long red_block_type=-1):
        """A whole FEC packet for one viewer: `header` (its RTP header, from
        rtp_header()), then — when red_block_type ≥ 0 — the RFC 2198 §3 primary
        block header F=0|red_block_type (the ULPFEC payload type; `header` then
        carries PT=red), then write(...)'s payload. One allocation."""
        cdef Py_buffer view
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self._payload)
        cdef Py_ssize_t red = red_block_type >= 0
        cdef unsigned char *out
        if not -1 <= red_block_type <= 127:
            check_range("red_block_type", red_block_type, -1, 127)
        PyObject_GetBuffer(header, &view, PyBUF_SIMPLE)
        try:
            result = PyBytes_FromStringAndSize(NULL, view.len + red + size)
            out = <unsigned char *>PyBytes_AS_STRING(result)
            memcpy(out, view.buf, view.len)
            out += view.len
        finally:
            PyBuffer_Release(&view)
        if red:
            out[0] = <unsigned char>red_block_type  # F=0: the primary (only) block
            out += 1
        memcpy(out, PyBytes_AS_STRING(self._payload), size)
        self._patch(out, sn_base, media_ssrc, payload_type, ext)
        return result


def encode(scheme, packets, masks):
    """FEC payloads for one group of laid-out media packets (buffers, in
    sequence order: packet i is SN base + i for every viewer), one per mask
    (bit i ⇒ packet i; see masks())."""
    cdef bint flexfec = check_scheme(scheme)
    if type(packets) is not list:
        packets = list(packets)
    cdef Py_ssize_t media_count = len(packets)
    check_group(media_count)
    cdef Py_buffer views[MAX_PACKETS]
    cdef const unsigned char *data[MAX_PACKETS]
    cdef Py_ssize_t lengths[MAX_PACKETS]
    cdef Py_ssize_t offsets[MAX_PACKETS]
    cdef Py_ssize_t rooms[MAX_PACKETS]
    cdef Py_ssize_t acquired = 0, fec_total, i, j, offset, room
    cdef FecJob *jobs = NULL
    cdef FecPayload fec
    cdef uint64_t mask
    cdef bint same_offset
    if type(masks) is not list:
        masks = list(masks)
    fec_total = len(masks)
    try:
        for i in range(media_count):
            PyObject_GetBuffer(packets[i], &views[i], PyBUF_SIMPLE)
            acquired += 1
            data[i] = <const unsigned char *>views[i].buf
            lengths[i] = views[i].len
            if (not FIXED_HEADER <= lengths[i] <= MAX_PACKET_SIZE) or data[i][0] >> 6 != 2:
                packet_error(i, memoryview(packets[i]).cast("B"))
            ext_layout(data[i], lengths[i], &offsets[i], &rooms[i])
        jobs = <FecJob *>PyMem_Malloc(fec_total * sizeof(FecJob) + 1)
        if jobs == NULL:
            raise MemoryError()
        results = []
        for j in range(fec_total):
            value = masks[j]
            if type(value) is not int or value <= 0 or value >> media_count:
                mask_error(j, value, media_count)
            mask = value
            fec = FecPayload.__new__(FecPayload)
            fec._flexfec = flexfec
            fec.scheme = SCHEMES[flexfec]
            fec.mask = value
            fec.count = 0
            fec.protection_length = 0
            same_offset = True
            offset = room = -1
            for i in range(media_count):
                if (mask >> i) & 1:
                    fec.count += 1
                    if lengths[i] - FIXED_HEADER > fec.protection_length:
                        fec.protection_length = lengths[i] - FIXED_HEADER
                    if offset < 0:
                        offset, room = offsets[i], rooms[i]
                    elif offsets[i] != offset:
                        same_offset = False
                    elif rooms[i] < room:
                        room = rooms[i]
            fec._ext_offset = offset
            fec.ext_room = room if same_offset else 0
            if flexfec:
                fec.header_size = flexfec_header_size(mask, media_count)
            elif media_count > SHORT_PACKETS:
                fec.header_size = ULPFEC_LONG_HEADER
            else:
                fec.header_size = ULPFEC_SHORT_HEADER
            fec._payload = PyBytes_FromStringAndSize(
                NULL, fec.header_size + fec.protection_length)
            jobs[j].mask = mask
            jobs[j].out = <unsigned char *>PyBytes_AS_STRING(fec._payload)
            jobs[j].header_size = fec.header_size
            jobs[j].protection_length = fec.protection_length
            results.append(fec)
        with nogil:
            for j in range(fec_total):
                fill_fec(&jobs[j], data, lengths, media_count, flexfec)
    finally:
        PyMem_Free(jobs)
        for i in range(acquired):
            PyBuffer_Release(&views[i])
    return results


def xor_parity(packets):
    """The parity core: the XOR of `packets` (bytes-like), zero-padded to the longest."""
    if type(packets) is not list:
        packets = list(packets)
    cdef Py_ssize_t count = len(packets), acquired = 0, size = 0, i
    cdef Py_buffer *views = <Py_buffer *>PyMem_Malloc(count * sizeof(Py_buffer) + 1)
    cdef unsigned char *out
    if views == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            PyObject_GetBuffer(packets[i], &views[i], PyBUF_SIMPLE)
            acquired += 1
            if views[i].len > size:
                size = views[i].len
        result = PyBytes_FromStringAndSize(NULL, size)
        out = <unsigned char *>PyBytes_AS_STRING(result)
        with nogil:
            memset(out, 0, size)
            for i in range(count):
                fec_xor(out, <const unsigned char *>views[i].buf, views[i].len)
    finally:
        for i in range(acquired):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
    return result
