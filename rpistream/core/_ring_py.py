"""Pure-Python twin of the compiled FrameRing (ext/rpistream/core/_ring.pyx).

Same record layout, same drop and keyframe rules, same API; it exists so
rpistream runs where the extension cannot be built, and as the reference the
tests hold the extension to. Ordering comes from the GIL here: every statement
below runs whole, and a GIL hand-off is a full barrier.
"""

from __future__ import annotations

import os
import struct
import threading

from rpistream.core.ring_format import HEADER, HEADER_SIZE, KEYFRAME, MIN_CAPACITY, WRAP, record_size


class Frame:
    """One encoded frame, read in place: `data` is valid until `ring.release()`."""

    __slots__ = ("data", "capture_ns", "pts", "keyframe")

    def __init__(self, data: memoryview, capture_ns: int, pts: int, keyframe: bool):
        self.data = data
        self.capture_ns = capture_ns
        self.pts = pts
        self.keyframe = keyframe

    def __repr__(self) -> str:
        return (f"Frame({len(self.data)} bytes, capture_ns={self.capture_ns}, "
                f"pts={self.pts}, keyframe={self.keyframe})")


class FrameRing:
    """Single-producer / single-consumer ring of encoded frames."""

    def __init__(self, capacity: int):
        if capacity < MIN_CAPACITY or capacity % 8:
            raise ValueError(
                f"FrameRing capacity must be a multiple of 8 and at least "
                f"{MIN_CAPACITY} bytes, got {capacity}")
        self._buf = bytearray(capacity)
        self._view = memoryview(self._buf)
        self._capacity = capacity
        self._max_payload = capacity // 2 - HEADER_SIZE
        self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._head = 0
        self._tail = 0
        self._consumer_waiting = True
        self._wake_lock = threading.Lock()
        self._pending: Frame | None = None
        self._pending_next = 0
        self._closed = False
        self.wants_keyframe = True
        self.pushed = 0
        self.dropped = 0
        self.skipped = 0
        self.bytes_pushed = 0
        self.high_water = 0

    def __del__(self) -> None:
        fd = getattr(self, "_eventfd", -1)
        if fd >= 0:
            os.close(fd)
            self._eventfd = -1

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_frame_size(self) -> int:
        return self._max_payload

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def used(self) -> int:
        return self._head - self._tail

    def fileno(self) -> int:
        return self._eventfd

    def push(self, data, capture_ns: int, pts: int, keyframe: bool) -> bool:
        length = memoryview(data).nbytes
        if length > self._max_payload:
            raise ValueError(
                f"frame of {length} bytes is larger than this ring's limit of "
                f"{self._max_payload} bytes (half its capacity, so that a frame "
                f"always fits an empty ring); give the ring more capacity")
        if self._closed:
            raise ValueError("push to a closed FrameRing")
        if self.wants_keyframe and not keyframe:
            self.skipped += 1
            return False
        cap = self._capacity
        head, tail = self._head, self._tail
        size = record_size(length)
        off = head % cap
        skip = cap - off if cap - off < size else 0
        if head - tail + skip + size > cap:
            self.dropped += 1
            self.wants_keyframe = True
            return False
        if skip:
            struct.pack_into("<I", self._buf, off, WRAP)
            head += skip
            off = 0
        HEADER.pack_into(self._buf, off, length, KEYFRAME if keyframe else 0,
                          capture_ns, pts)
        self._view[off + HEADER_SIZE:off + HEADER_SIZE + length] = memoryview(data).cast("B")
        head += size
        self._head = head
        self.high_water = max(self.high_water, head - tail)
        self.pushed += 1
        self.bytes_pushed += length
        if keyframe:
            self.wants_keyframe = False
        with self._wake_lock:
            wake, self._consumer_waiting = self._consumer_waiting, False
        if wake:
            try:
                os.eventfd_write(self._eventfd, 1)
            except BlockingIOError:
                pass  # counter already non-zero: a wake-up is pending
        return True

    def pop(self) -> Frame | None:
        if self._pending is not None:
            raise RuntimeError("release() the frame from pop() before popping the next")
        tail = self._tail
        if tail == self._head:
            try:
                os.eventfd_read(self._eventfd)
            except BlockingIOError:
                pass
            with self._wake_lock:
                self._consumer_waiting = True
                if tail == self._head:
                    return None
                self._consumer_waiting = False
        cap = self._capacity
        off = tail % cap
        (length,) = struct.unpack_from("<I", self._buf, off)
        if length == WRAP:
            tail += cap - off
            off = 0
        length, flags, capture_ns, pts = HEADER.unpack_from(self._buf, off)
        start = off + HEADER_SIZE
        data = self._view[start:start + length].toreadonly()
        self._pending = Frame(data, capture_ns, pts, bool(flags & KEYFRAME))
        self._pending_next = tail + record_size(length)
        return self._pending

    def release(self) -> None:
        if self._pending is None:
            return
        self._pending.data.release()
        self._pending = None
        self._tail = self._pending_next

    def close(self) -> None:
        self._closed = True
