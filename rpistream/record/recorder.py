"""Recorder: one camera's recording, between the event loop and the disk.

The event loop offers every frame of the camera (`offer()`); one writer
thread per camera ("record:<camera>") muxes them into segment files with a
SegmentWriter (rpistream/record/segments.py), runs retention after each
segment (rpistream/record/retention.py), and copes with a disk that fills
up or fails. The recorder owns its queue, its writer thread and the
SegmentWriter; nothing else touches the directory while it runs (one
writer per directory is what names.py and recover.py rely on).

Hand-off. `offer()` runs on the event loop and must never wait for the
disk: it copies the frame (the memoryview points into the camera's ring
and is valid only during the call) into a deque guarded by a Condition,
whose lock either thread holds only for a few list and counter operations,
never across I/O. The queue is bounded twice, by frames and by bytes
(`held_frames`, `held_bytes`, readable from the loop for the memory
watch). A frame that would exceed either bound is dropped, and so is every
frame after it until the next keyframe: a delta frame whose reference was
dropped cannot be decoded. The keyframe that ends the run carries a mark,
and the writer calls SegmentWriter.gap() before writing it, so the
segment goes on from that keyframe and never holds a frame whose
reference is missing.

Disk full (ENOSPC, EDQUOT) and other failures. SegmentWriter abandons the
segment it was writing and raises; the recorder logs one ERROR line (the
camera, the directory, the error, and that streaming goes on), calls
recover() on the directory so the abandoned .partial becomes a playable
segment (up to its last complete fragment), and from then drops frames,
counted, until a retry: at a keyframe at least RETRY_S after the failure,
after retention has had its chance to free space and, for a full disk,
only once RESUME_FREE_BYTES (or `min_free_bytes`, if more) are free. A
retry writes frames again; once the OS has taken bytes of the new segment
the recorder is recording again, and says so in one INFO line. A retry
that fails again logs at DEBUG only and doubles the wait, up to
RETRY_MAX_S. Memory stays within the queue's bounds and the
SegmentWriter's (its flush_bytes) whatever the disk does, and the thread
sleeps on the Condition whenever no frame is queued: it never spins.

States (`stats()["state"]`): "stopped" (not started, or stopped),
"recording" (including waiting for the first keyframe), "disk-full",
"failed" (any other error: EIO, a directory gone, an FFmpeg error), with
the reason in words (empty while recording). Counters are written by one
thread each (the loop's drops, the writer's drops) so that no increment is
lost between threads; every value `stats()` reads is a single attribute
read, atomic under the GIL.
"""

from __future__ import annotations

import collections
import errno
import logging
import threading
import time
from pathlib import Path

from rpistream.record.recover import recover
from rpistream.record.retention import enforce_retention, free_bytes
from rpistream.record.segments import FORMATS, SegmentWriter

log = logging.getLogger("rpistream.record")

RECORDING = "recording"
DISK_FULL = "disk-full"
FAILED = "failed"
STOPPED = "stopped"
STATES = (RECORDING, DISK_FULL, FAILED, STOPPED)

# 60 frames: 2 s of a 30 fps camera. An SD card stalls for hundreds of
# milliseconds now and then (wear levelling, the fsync that completes a
# segment); 2 s rides those out without a drop. A frame waiting here costs
# memory, not latency (no viewer waits for the recorder), but more than
# that only means a disk too slow for the stream, which no queue fixes.
DEFAULT_QUEUE_FRAMES = 60
# 8 MiB: 2 s of a 32 Mbit/s stream, eight times a 4 Mbit/s camera's 2 s;
# a 1080p keyframe (~1 MB) fits many times over. Per camera, against the
# unit's MemoryMax=512M (docs/DESIGN.md §5): with the SegmentWriter's
# buffers (its sink's and FFmpeg's fragment, each at most flush_bytes,
# 4 MiB) at most 16 MiB a camera for recording, whatever the disk does.
DEFAULT_QUEUE_BYTES = 8 * 1024 * 1024
# Wait after a failure before the first retry, doubling after each retry
# that fails, up to RETRY_MAX_S (as a camera's restart backoff does,
# rpistream/stream/health.py): space freed by hand is used again within
# a keyframe interval or two of 2 s; a disk that keeps failing costs one
# try (a file created, a fragment written, the file recovered) every 30 s.
RETRY_S = 2.0
RETRY_MAX_S = 30.0
# A full disk is retried only with this much free (or min_free_bytes, if
# more): the first fragment of the new segment, a 2 s keyframe interval of
# a 4 Mbit/s camera, fits. With less it would fail again at once and
# leave one more cut-short file for recover().
RESUME_FREE_BYTES = 1024 * 1024
# free_bytes() (a statvfs) is read on the writer thread at most this often
# and cached for stats(): the event loop never makes a system call on a
# disk that may hang (a USB stick, a network mount).
FREE_BYTES_EVERY_S = 1.0
# Errors that mean "no room": the disk, or the user's quota on it.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class Recorder:
    """One camera's recording: see the module docstring.

    `offer()`, `held_frames`, `held_bytes` and `stats()` are for the event
    loop; `start()` and `stop()` do blocking work (recover(), a join) and
    belong at start-up or in an executor. A recorder runs once.
    """

    def __init__(self, camera: str, codec: str, width: int, height: int, *, directory: Path,
                 segment_seconds: float, max_age_s: float | None, max_bytes: int | None,
                 min_free_bytes: int | None, queue_frames: int = DEFAULT_QUEUE_FRAMES,
                 queue_bytes: int = DEFAULT_QUEUE_BYTES):
        if codec not in FORMATS:
            raise ValueError(f"camera {camera}: cannot record codec {codec!r}: "
                             f"choose one of {sorted(FORMATS)}")
        if not segment_seconds > 0:
            raise ValueError(f"camera {camera}: segment_seconds must be positive, "
                             f"not {segment_seconds}")
        if queue_frames < 1 or queue_bytes < 1:
            raise ValueError(f"camera {camera}: queue_frames and queue_bytes must be at least 1, "
                             f"not {queue_frames} and {queue_bytes}")
        self.camera = camera
        self.codec = codec
        self.width, self.height = width, height
        self.directory = Path(directory)
        self.segment_seconds = segment_seconds
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.queue_frames = queue_frames
        self.queue_bytes = queue_bytes
        self._resume_free = max(min_free_bytes or 0, RESUME_FREE_BYTES)

        # The hand-off. Bounded by queue_frames and queue_bytes (offer()
        # checks both before appending). Entries: (data, capture_ns,
        # keyframe, after_gap).
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._open = False  # offer() takes frames (between start() and stop())
        self._finishing = False  # the writer ends once the queue is empty
        self._held_frames = 0
        self._held_bytes = 0
        self._dropping = False  # since a drop, until the next keyframe fits

        # Loop-side counters (written only in offer()).
        self.frames_offered = 0
        self.frames_dropped_queue = 0  # full queue, and after it until a keyframe
        self.drops = 0  # runs of them: each a skip to the next keyframe
        self.held_frames_max = 0
        self.held_bytes_max = 0
        self.frames_too_large = 0  # larger than queue_bytes on their own

        # Writer-side (written only on the writer thread, or before it starts).
        self.frames_dropped_disk = 0  # dropped while the disk was full or failing
        self.segments_deleted = 0  # by retention
        self.failures = 0  # errors that stopped recording (retries that failed included)
        self._status = (STOPPED, "not started")  # (state, reason): one assignment
        self._writer: SegmentWriter | None = None
        self._thread: threading.Thread | None = None
        self._retry_at_ns = 0
        self._backoff_s = RETRY_S
        self._probing = False  # retrying: recording again once the OS takes bytes
        self._probe_bytes = 0
        self._failed_since_ns = 0
        self._dropped_before = 0  # frames_dropped_disk when recording paused
        self._free_bytes = -1  # cached free_bytes(); -1 until first read
        self._free_read_ns: int | None = None
        self._write_ns_last = 0
        self._last_segment = ""

    def __repr__(self) -> str:
        return (f"<Recorder {self.camera} {self.codec} {self.directory} "
                f"state={self._status[0]} held={self._held_frames}>")

    # -- the caller's side ----------------------------------------------------------

    def start(self) -> None:
        """Create the directory if needed, recover a crash's leftovers in it
        (one log line each), then start the writer thread. Blocks on the
        disk: call it at start-up or in an executor."""
        if self._thread is not None or self._finishing:
            raise RuntimeError(f"recorder {self.camera} was already started or stopped: "
                               f"a recorder runs once")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, f"camera {self.camera}: cannot create the recording "
                                     f"directory {self.directory}: {exc.strerror}") from exc
        for line in recover(self.directory):
            log.info("recorder %s: %s", self.camera, line)
        self._writer = SegmentWriter(self.directory, self.codec, self.width, self.height,
                                     segment_seconds=self.segment_seconds)
        self._status = (RECORDING, "")
        with self._cond:
            self._open = True
        self._thread = threading.Thread(target=self._main, name=f"record:{self.camera}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Take no more frames; the writer writes what is queued, completes
        the current segment and ends. Waits at most `timeout` s for it: True
        if it ended, False if it is still busy (a hung disk: the daemon
        thread is abandoned). Idempotent."""
        with self._cond:
            self._open = False
            self._finishing = True
            self._cond.notify()
        thread = self._thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        if thread.is_alive():
            log.warning("recorder %s: writer thread did not end within %.1f s "
                        "(the disk is not answering); abandoned", self.camera, timeout)
            return False
        return True

    def offer(self, data, capture_ns: int, keyframe: bool) -> bool:
        """Queue one frame for the writer; True if taken. O(1), never waits
        for the disk. `data` (bytes-like, one byte per item) is copied only
        if taken. A frame that would exceed `queue_frames` or `queue_bytes`
        is dropped, and every frame after it until the next keyframe that
        fits (see the module docstring)."""
        size = len(data)
        with self._cond:
            if not self._open:
                return False
            self.frames_offered += 1
            if self._dropping and not keyframe:
                self.frames_dropped_queue += 1
                return False
            if (self._held_frames >= self.queue_frames
                    or self._held_bytes + size > self.queue_bytes):
                if size > self.queue_bytes:
                    if not self.frames_too_large:  # the first one: a setting to fix
                        log.warning("recorder %s: a %d-byte frame is larger than queue_bytes "
                                    "(%d): frames this large are never recorded", self.camera,
                                    size, self.queue_bytes)
                    self.frames_too_large += 1
                if not self._dropping:
                    self._dropping = True
                    self.drops += 1
                self.frames_dropped_queue += 1
                return False
            after_gap, self._dropping = self._dropping, False
            self._queue.append((bytes(data), capture_ns, keyframe, after_gap))
            self._held_frames += 1
            self._held_bytes += size
            self.held_frames_max = max(self.held_frames_max, self._held_frames)
            self.held_bytes_max = max(self.held_bytes_max, self._held_bytes)
            self._cond.notify()
        return True

    @property
    def held_frames(self) -> int:
        """Frames queued for the writer now (at most queue_frames)."""
        return self._held_frames

    @property
    def held_bytes(self) -> int:
        """Bytes of frames queued for the writer now (at most queue_bytes)."""
        return self._held_bytes

    @property
    def state(self) -> str:
        return self._status[0]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict:
        """Plain values, safe to read from the loop (no system call, no lock)."""
        state, reason = self._status
        writer = self._writer
        write_stats = writer.stats if writer is not None else None
        partial = writer.partial_path if writer is not None else None
        return {
            "camera": self.camera,
            "state": state,
            "reason": reason,
            "segments": writer.segments_completed if writer else 0,
            "segments_failed": writer.segments_failed if writer else 0,
            "segments_deleted": self.segments_deleted,
            "bytes_written": write_stats.bytes if write_stats else 0,
            "frames_offered": self.frames_offered,
            "frames_written": writer.frames_written if writer else 0,
            "frames_skipped": writer.frames_skipped if writer else 0,
            "frames_dropped": self.frames_dropped_queue + self.frames_dropped_disk,
            "frames_dropped_queue": self.frames_dropped_queue,
            "frames_dropped_disk": self.frames_dropped_disk,
            "drops": self.drops,
            "failures": self.failures,
            "queue_frames": self._held_frames,
            "queue_bytes": self._held_bytes,
            "queue_frames_max": self.held_frames_max,
            "queue_bytes_max": self.held_bytes_max,
            "queue_frames_limit": self.queue_frames,
            "queue_bytes_limit": self.queue_bytes,
            "write_ms_last": self._write_ns_last / 1e6,
            "write_ms_max": write_stats.write_ns_max / 1e6 if write_stats else 0.0,
            "sync_ms_max": write_stats.sync_ns_max / 1e6 if write_stats else 0.0,
            "disk_free_bytes": self._free_bytes,
            "segment": str(partial) if partial is not None else "",
            "last_segment": self._last_segment,
        }

    # -- the writer thread ----------------------------------------------------------

    def _main(self) -> None:
        try:
            self._refresh_free(force=True)
            self._retain()
            while True:
                with self._cond:
                    while not self._queue and not self._finishing:
                        self._cond.wait()
                    if not self._queue:
                        break  # finishing, and everything queued is written
                    data, capture_ns, keyframe, after_gap = self._queue.popleft()
                    self._held_frames -= 1
                    self._held_bytes -= len(data)
                self._frame(data, capture_ns, keyframe, after_gap)
                del data  # the queue's copy: freed now, not when the next frame comes
            self._close()
        except BaseException as exc:  # noqa: BLE001 - the thread's last stop: log, never escape
            self._status = (FAILED, f"writer thread failed: {type(exc).__name__}: {exc}")
            log.error("recorder %s: writer thread failed; recording stopped, streaming "
                      "continues", self.camera, exc_info=exc)
            with self._cond:
                self._open = False
                self._queue.clear()
                self._held_frames = self._held_bytes = 0
            try:
                # Abandon the open segment, if any: its .partial (lock
                # released) is the next start's recover() to make playable.
                self._writer.__exit__(type(exc), exc, exc.__traceback__)
            except Exception:  # noqa: BLE001 - the failure above is the one to report
                pass

    def _frame(self, data: bytes, capture_ns: int, keyframe: bool, after_gap: bool) -> None:
        writer = self._writer
        if after_gap:
            writer.gap()  # frames were dropped before this keyframe: resume on it
        self._refresh_free()
        if self._status[0] in (DISK_FULL, FAILED) and not self._probing:
            if not (keyframe and self._may_retry()):
                self.frames_dropped_disk += 1
                return
            self._probing = True
            self._probe_bytes = writer.stats.bytes
            log.debug("recorder %s: retrying after %s", self.camera, self._status[1])
        self._write(lambda: writer.write(data, capture_ns, keyframe))

    def _close(self) -> None:
        self._write(self._writer.close)
        state, reason = self._status
        self._status = (STOPPED, "" if state == RECORDING else f"stopped while {state}: {reason}")

    def _write(self, call) -> None:
        """A write() or close() of the SegmentWriter, with what follows it:
        completed segments, retention, and failure handling."""
        writer = self._writer
        stats = writer.stats
        writes, write_ns = stats.writes, stats.write_ns_total
        completed = writer.segments_completed
        failure = None
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - every failure is handled the same way
            failure = exc
        if stats.writes != writes:
            self._write_ns_last = (stats.write_ns_total - write_ns) // (stats.writes - writes)
        if writer.segments_completed != completed:
            # Also when the write that completed it then failed starting the next.
            self._completed(writer.last_completed)
        if failure is not None:
            self._failed(failure)
        elif self._probing and stats.bytes > self._probe_bytes:
            self._resumed()

    def _completed(self, path: Path) -> None:
        self._last_segment = str(path)
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        log.debug("recorder %s: segment %s completed, %d bytes", self.camera, path.name, size)
        self._retain()
        self._refresh_free(force=True)

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic_ns()
        self.failures += 1
        full = isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS
        state = DISK_FULL if full else FAILED
        what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc)
        was, self._probing = self._status[0], False
        if was == state:
            # A retry that failed the same way: said already; wait longer.
            self._backoff_s = min(self._backoff_s * 2, RETRY_MAX_S)
            log.debug("recorder %s: retry failed (%s); next in %.0f s", self.camera, what,
                      self._backoff_s)
        else:
            self._backoff_s = RETRY_S
            if was not in (DISK_FULL, FAILED):
                self._failed_since_ns = now
                self._dropped_before = self.frames_dropped_disk
            if full:
                log.error("recorder %s: disk full writing %s (%s): recording paused, streaming "
                          "continues; completed segments are kept; retrying when %d bytes are "
                          "free", self.camera, self.directory, what, self._resume_free)
            else:
                log.error("recorder %s: writing %s failed (%s): recording paused, streaming "
                          "continues; completed segments are kept; retrying in %.0f s",
                          self.camera, self.directory, what, self._backoff_s,
                          exc_info=None if isinstance(exc, OSError) else exc)
        self._status = (state, f"disk full: {what}" if full else what)
        self._retry_at_ns = now + int(self._backoff_s * 1e9)
        # The writer holds no file now: make its abandoned .partial playable.
        try:
            for line in recover(self.directory):
                log.info("recorder %s: %s", self.camera, line)
        except OSError as error:
            log.warning("recorder %s: recover() of %s failed: %s", self.camera,
                        self.directory, error)
        self._retain()
        self._refresh_free(force=True)

    def _may_retry(self) -> bool:
        """At a keyframe while recording is paused: is a retry due?"""
        now = time.monotonic_ns()
        if now < self._retry_at_ns:
            return False
        if self._status[0] == DISK_FULL:
            self._retain()  # may free what the limits allow
            self._refresh_free(force=True)
            if self._free_bytes < self._resume_free:
                # Looking is cheap (a statvfs): look again soon, no doubling.
                self._retry_at_ns = now + int(RETRY_S * 1e9)
                return False
        return True

    def _resumed(self) -> None:
        self._probing = False
        paused_s = (time.monotonic_ns() - self._failed_since_ns) / 1e9
        log.info("recorder %s: recording to %s resumed after %.1f s (%s); %d frames were "
                 "dropped meanwhile", self.camera, self.directory, paused_s, self._status[1],
                 self.frames_dropped_disk - self._dropped_before)
        self._backoff_s = RETRY_S
        self._status = (RECORDING, "")

    def _retain(self) -> None:
        if self.max_age_s is None and self.max_bytes is None and self.min_free_bytes is None:
            return
        try:
            deleted = enforce_retention(self.directory, max_age_s=self.max_age_s,
                                        max_bytes=self.max_bytes,
                                        min_free_bytes=self.min_free_bytes)
        except OSError as exc:
            log.warning("recorder %s: retention in %s failed: %s", self.camera,
                        self.directory, exc)
            return
        for path in deleted:
            self.segments_deleted += 1
            log.info("recorder %s: retention deleted %s", self.camera, path.name)

    def _refresh_free(self, force: bool = False) -> None:
        now = time.monotonic_ns()
        if not force and self._free_read_ns is not None \
                and now - self._free_read_ns < FREE_BYTES_EVERY_S * 1e9:
            return
        self._free_read_ns = now
        try:
            self._free_bytes = free_bytes(self.directory)
        except OSError:
            self._free_bytes = -1  # unknown: the directory is gone or the disk failing
