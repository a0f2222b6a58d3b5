"""The file a muxer writes a segment into: buffered, counted, timed, crash-safe.

PyAV's muxer writes through a Python file object (``av.open(sink, "w")``);
this is that object. It collects the muxer's bytes and hands them to the OS
in few, large writes: when the segment writer says the muxer has finished a
unit (an MP4 fragment, a WebM cluster: see rpistream/record/segments.py), or
when holding more would exceed `flush_bytes`, whichever comes first. One
write per frame would cost a system call and, on an SD card, a flash
program cycle per 33 ms; one per fragment also means a process killed
between writes leaves a file that ends where a fragment ends.

It is seekable: the WebM muxer goes back at the end to fill in the
duration, the Cues' place and the Segment's size (that is what lets a
browser seek in the file), and the MP4 muxer in fragmented mode never goes
back. A seek costs nothing until the next write: bytes are written where
they belong with os.pwrite.

The file is created exclusively, locked (flock) for as long as the sink is
open, so that recover() leaves alone a .partial a running writer still
owns; `finish()` writes what is buffered, fsyncs and closes it. A failed OS
write (ENOSPC, EIO) raises OSError to the muxer, which PyAV re-raises to the
caller of mux(); after `abandon()` the sink swallows whatever the muxer
still writes, so closing the muxer cannot fail a second time.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WriteStats:
    """What the sinks of one writer did to the disk, for the recorder to report.

    Integers, assigned on the writer's thread and read from any thread: each
    read is atomic under the GIL. Times are nanoseconds of time.perf_counter_ns().
    """

    writes: int = 0  # OS writes (os.pwrite calls)
    bytes: int = 0  # bytes they wrote
    write_ns_total: int = 0  # time spent in them
    write_ns_max: int = 0  # the slowest one
    syncs: int = 0  # fsyncs of completed segments
    sync_ns_total: int = 0
    sync_ns_max: int = 0
    buffered_max: int = 0  # the most bytes a sink held at once (<= flush_bytes)


class SegmentSink:
    """A write-only, seekable file object over a new file at `path`."""

    def __init__(self, path: Path, flush_bytes: int, stats: WriteStats):
        if flush_bytes <= 0:
            raise ValueError(f"flush_bytes must be positive, not {flush_bytes}")
        self.path = path
        self._flush_bytes = flush_bytes
        self._stats = stats
        # O_EXCL: never append to or clobber another segment's file.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise
        # Bounded by flush_bytes (write() flushes before it would grow past
        # it): with the one frame the segment writer holds back, all the
        # memory recording costs besides FFmpeg's own fragment buffer.
        self._buffer = bytearray()
        self._buffer_at = 0  # file offset of _buffer[0]
        self._position = 0  # where the muxer's next byte goes
        self._size = 0  # the file's length once everything is written
        self._failed = False
        self.received = 0  # bytes the muxer gave us
        self.written = 0  # bytes of this file handed to the OS

    # The file object PyAV needs: write, seek, tell (and seekable, writable).

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset}, before the start of {self.path.name}")
        self._position = base + offset
        return self._position

    def write(self, data) -> int:
        size = len(data)
        self.received += size
        if self._failed:
            return size  # abandoned: the muxer is only being closed
        if self._position != self._buffer_at + len(self._buffer):
            self._write_buffer()  # a seek happened: start a new run of bytes here
            self._buffer_at = self._position
        if len(self._buffer) + size > self._flush_bytes:
            self._write_buffer()
            self._buffer_at = self._position
        if size >= self._flush_bytes:
            self._pwrite(data, self._position)  # as large as a flush: no copy
        else:
            self._buffer += data
            self._stats.buffered_max = max(self._stats.buffered_max, len(self._buffer))
        self._position += size
        self._size = max(self._size, self._position)
        return size

    # The segment writer's side.

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def flush(self) -> None:
        """Hand what is buffered to the OS (the muxer finished a unit)."""
        if self._failed:
            return
        self._write_buffer()
        self._buffer_at = self._position

    def finish(self) -> None:
        """Everything written and on disk (fsync), the file closed."""
        self.flush()
        started = time.perf_counter_ns()
        os.fsync(self._fd)
        elapsed = time.perf_counter_ns() - started
        self._stats.syncs += 1
        self._stats.sync_ns_total += elapsed
        self._stats.sync_ns_max = max(self._stats.sync_ns_max, elapsed)
        self._close()

    def abandon(self) -> None:
        """Give up after a failure: drop what is buffered, keep what reached the
        file (fsync'ed if the disk lets us: recover() salvages it), close it.
        Raises nothing."""
        self._failed = True
        self._buffer = bytearray()
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError:
                pass  # the disk already failed; the original error is the one to report
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # releases the flock

    def _write_buffer(self) -> None:
        if self._buffer:
            self._pwrite(self._buffer, self._buffer_at)
            self._buffer = bytearray()

    def _pwrite(self, data, offset: int) -> None:
        view = memoryview(data)
        started = time.perf_counter_ns()
        while view:
            # pwrite may write less than asked (a signal, a nearly full disk);
            # a full disk raises OSError(ENOSPC) on the next call.
            written = os.pwrite(self._fd, view, offset)
            if written == 0:
                raise OSError(errno.ENOSPC, f"{self.path}: the disk took no bytes")
            view = view[written:]
            offset += written
        elapsed = time.perf_counter_ns() - started
        self.written += len(data)
        self._stats.writes += 1
        self._stats.bytes += len(data)
        self._stats.write_ns_total += elapsed
        self._stats.write_ns_max = max(self._stats.write_ns_max, elapsed)


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable (POSIX: the directory
    entry is the directory's data; fsync of the file does not cover it)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (older FUSE ones, some network mounts) cannot
        # sync a directory; the rename is still atomic, only not yet durable.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
