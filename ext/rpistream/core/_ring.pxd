from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef extern from "ring.h" nogil:
    ctypedef struct ring_state:
        uint64_t head
        uint64_t pushed
        uint64_t dropped
        uint64_t skipped
        uint64_t bytes
        uint64_t high_water
        uint32_t wants_keyframe
        uint32_t closed
        uint64_t tail
        uint32_t consumer_waiting
        unsigned char *buf
        uint64_t capacity
        int eventfd

    ctypedef enum ring_push_result:
        RING_STORED
        RING_DROPPED
        RING_SKIPPED
        RING_CLOSED

    const uint32_t RING_HEADER
    const uint32_t RING_KEYFRAME
    uint64_t ring_record_size(uint64_t payload) noexcept
    uint64_t ring_load_relaxed(const uint64_t *p) noexcept
    uint32_t ring_load_flag(const uint32_t *p) noexcept
    void ring_close(ring_state *r) noexcept
    ring_push_result ring_push(ring_state *r, const unsigned char *data,
                               uint32_t length, int64_t capture_ns,
                               int64_t pts, int keyframe) noexcept
    int64_t ring_peek(ring_state *r, uint64_t *next) noexcept
    void ring_release(ring_state *r, uint64_t next) noexcept


cdef class FrameRing:
    cdef ring_state *_state
    cdef uint64_t _max_payload
    cdef uint64_t _pending_next
    cdef object _pending

    cpdef bint push(self, object data, int64_t capture_ns, int64_t pts, bint keyframe) except -1
    cpdef object pop(self)
    cpdef release(self)


cdef class Frame:
    cdef readonly object data
    cdef readonly int64_t capture_ns
    cdef readonly int64_t pts
    cdef readonly bint keyframe
