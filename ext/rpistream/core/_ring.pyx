# cython: freethreading_compatible = False
"""FrameRing: lock-free SPSC ring of encoded frames (the algorithm is in ring.h)."""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport errno
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memset
from posix.unistd cimport close

import os

from rpistream.core.ring_format import MIN_CAPACITY


cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    const int EFD_NONBLOCK
    const int EFD_CLOEXEC


# Below this size a frame is copied in while holding the GIL: copying it
# costs about what a GIL hand-off does (bench/bench_ring.py
# measures frames either side of it).
cdef enum:
    NOGIL_COPY_BYTES = 65536


cdef class _RecordBuffer:
    """Read-only buffer over one record's payload, inside the ring's memory.

    Holding a reference to the ring keeps that memory alive for as long as any
    memoryview of it exists, even past the ring's last other user.
    """
    cdef FrameRing _ring
    cdef const unsigned char *_ptr
    cdef Py_ssize_t _len

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("a frame in the ring is read-only")
        view.buf = <void *>self._ptr
        view.obj = self
        view.len = self._len
        view.readonly = 1
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = &self._len
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass


cdef class Frame:
    """One encoded frame, read in place: `data` is valid until `ring.release()`."""

    def __repr__(self):
        return (f"Frame({len(self.data)} bytes, capture_ns={self.capture_ns}, "
                f"pts={self.pts}, keyframe={self.keyframe})")


cdef class FrameRing:
    """Single-producer / single-consumer ring of encoded frames.

    The producer (one camera thread) calls `push`; the copy into the ring runs
    with the GIL released and never blocks: when the ring is full the frame is
    dropped and counted, and frames are refused until the next keyframe (a
    decoder cannot use a delta frame after a gap). The consumer (the event
    loop) watches `fileno()` and calls `pop` / `release` until `pop` returns
    None.
    """

    def __cinit__(self, Py_ssize_t capacity):
        if capacity < MIN_CAPACITY or capacity % 8:
            raise ValueError(
                f"FrameRing capacity must be a multiple of 8 and at least "
                f"{MIN_CAPACITY} bytes, got {capacity}")
        cdef void *mem = NULL
        # 64-byte alignment keeps head and tail on cache lines of their own.
        if posix_memalign(&mem, 64, sizeof(ring_state)) != 0:
            raise MemoryError()
        self._state = <ring_state *>mem
        memset(self._state, 0, sizeof(ring_state))
        self._state.eventfd = -1
        self._state.capacity = capacity
        # Nothing is handed out before the first keyframe.
        self._state.wants_keyframe = 1
        # The consumer starts out waiting: the first frame wakes it.
        self._state.consumer_waiting = 1
        if posix_memalign(&mem, 64, capacity) != 0:
            raise MemoryError()
        self._state.buf = <unsigned char *>mem
        fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if fd < 0:
            raise OSError(errno, os.strerror(errno))
        self._state.eventfd = fd
        # A record must always fit an empty ring wherever its head stands
        # (see ring.h): that holds for records up to half the capacity.
        self._max_payload = capacity // 2 - RING_HEADER
        self._pending_next = 0
        self._pending = None

    def __dealloc__(self):
        # Freed only here, when no thread holds the ring: a producer thread
        # still inside push() holds a reference, so it can never write to a
        # closed (and possibly reused) file descriptor or freed memory.
        if self._state is not NULL:
            if self._state.eventfd >= 0:
                close(self._state.eventfd)
            free(self._state.buf)
            free(self._state)
            self._state = NULL

    @property
    def capacity(self):
        return self._state.capacity

    @property
    def max_frame_size(self):
        """Largest frame `push` accepts, in bytes."""
        return self._max_payload

    def fileno(self):
        """eventfd that becomes readable when frames arrive in an empty ring."""
        return self._state.eventfd

    cpdef bint push(self, object data, int64_t capture_ns, int64_t pts, bint keyframe) except -1:
        """Copy one frame in. True if stored; False if dropped or skipped."""
        cdef Py_buffer view
        cdef ring_push_result result
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if <uint64_t>view.len > self._max_payload:
                raise ValueError(
                    f"frame of {view.len} bytes is larger than this ring's limit of "
                    f"{self._max_payload} bytes (half its capacity, so that a frame "
                    f"always fits an empty ring); give the ring more capacity")
            # Giving up the GIL costs a futex wake and a thread switch each
            # way when the event loop is waiting for it, more than copying a
            # small frame: only large copies run without it.
            if view.len >= NOGIL_COPY_BYTES:
                with nogil:
                    result = ring_push(self._state, <const unsigned char *>view.buf,
                                       <uint32_t>view.len, capture_ns, pts, keyframe)
            else:
                result = ring_push(self._state, <const unsigned char *>view.buf,
                                   <uint32_t>view.len, capture_ns, pts, keyframe)
        finally:
            PyBuffer_Release(&view)
        if result == RING_CLOSED:
            raise ValueError("push to a closed FrameRing")
        return result == RING_STORED

    cpdef object pop(self):
        """The oldest frame, read in place, or None when the ring is empty."""
        if self._pending is not None:
            raise RuntimeError("release() the frame from pop() before popping the next")
        cdef uint64_t next_pos
        cdef int64_t off = ring_peek(self._state, &next_pos)
        if off < 0:
            return None
        cdef const unsigned char *rec = self._state.buf + off
        cdef uint32_t length = (<const uint32_t *>rec)[0]
        cdef uint32_t flags = (<const uint32_t *>rec)[1]
        cdef _RecordBuffer buf = _RecordBuffer.__new__(_RecordBuffer)
        buf._ring = self
        buf._ptr = rec + RING_HEADER
        buf._len = length
        cdef Frame frame = Frame.__new__(Frame)
        frame.data = memoryview(buf)
        frame.capture_ns = (<const int64_t *>(rec + 8))[0]
        frame.pts = (<const int64_t *>(rec + 16))[0]
        frame.keyframe = (flags & RING_KEYFRAME) != 0
        self._pending = frame
        self._pending_next = next_pos
        return frame

    cpdef release(self):
        """Hand the popped frame's bytes back to the producer.

        Its memoryview is released too, so a use after this raises instead of
        reading bytes the producer may be overwriting.
        """
        if self._pending is None:
            return
        (<Frame>self._pending).data.release()
        self._pending = None
        ring_release(self._state, self._pending_next)

    def close(self):
        """Refuse further pushes. Memory and the eventfd go with the last reference."""
        ring_close(self._state)

    @property
    def closed(self):
        return ring_load_flag(&self._state.closed) != 0

    @property
    def wants_keyframe(self):
        """True after a drop, until the producer stores a keyframe."""
        return ring_load_flag(&self._state.wants_keyframe) != 0

    @property
    def pushed(self):
        return ring_load_relaxed(&self._state.pushed)

    @property
    def dropped(self):
        return ring_load_relaxed(&self._state.dropped)

    @property
    def skipped(self):
        return ring_load_relaxed(&self._state.skipped)

    @property
    def bytes_pushed(self):
        return ring_load_relaxed(&self._state.bytes)

    @property
    def high_water(self):
        return ring_load_relaxed(&self._state.high_water)

    @property
    def used(self):
        """Bytes held right now (records not yet released, wrap markers)."""
        return ring_load_relaxed(&self._state.head) - ring_load_relaxed(&self._state.tail)
