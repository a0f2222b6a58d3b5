"""Source: something that produces encoded frames on its own thread into a FrameRing.

A source owns one thread. The thread pushes each access unit (H.264, Annex-B)
or frame (VP8) into the ring with its capture time (time.monotonic_ns()) and
a 90 kHz pts, after a look at its header: a frame no decoder could start on
(garbage, cut short, mislabelled) is counted and dropped, and does not count
as a sign of life (`last_frame_ns`). When the thread fails, the source records
what went wrong in `error`, logs it, and stops; nothing escapes to
threading.excepthook. The thread is a daemon: one stuck in the camera stack
(libcamera, V4L2 can hang in a stop) is abandoned by its camera
(rpistream/stream/camera.py), and must not keep the process from exiting.
A source runs once; a camera that restarts makes a new one.
"""

from __future__ import annotations

import abc
import logging
import threading
import time

from rpistream.core import h264, vp8

log = logging.getLogger("rpistream.sources")

# RTP clock rate for video, RFC 6184 §8.2.1 / RFC 7741 §6.1.
PTS_HZ = 90_000
# When the ring drops a frame it waits for a keyframe; ask the encoder for one
# at most this often (the same pace as viewers' PLIs are let through), so a
# request the encoder ignored is retried without asking on every frame.
RING_KEYFRAME_RETRY_NS = 500_000_000
# Header checks per codec: a reason the frame is unusable, or None.
FRAME_PROBLEM = {"h264": h264.access_unit_problem, "vp8": vp8.frame_problem}


class SourceError(Exception):
    """A failure the user can fix; the message says what and how."""


class Source(abc.ABC):
    """Base of the testpattern, file and picamera2 sources.

    Attributes: `codec` ("h264" or "vp8"), `width`, `height`, `fps`,
    `profile_level_id` (RFC 6184 §8.1, for h264: from the SPS the source
    actually produced, known once `wait_ready()` returns True; None for vp8),
    `gop` (the most frames the source makes from one keyframe to the next
    when none is asked for: frames, not seconds, because an encoder starved
    of CPU makes fewer frames a second, not longer GOPs), `frames` (frames the
    ring accepted), `frames_rejected` (unusable frames dropped),
    `frames_since_keyframe` (usable frames since the last usable keyframe),
    `last_frame_ns` and `last_keyframe_ns` (time.monotonic_ns() of the last
    usable frame and keyframe, or None), `error` (None, or why the thread died).

    `fault_hook`, None in service, lets tests break a running source the way
    cameras break: called on the source's thread with (data, keyframe) of
    each frame, it returns the (data, keyframe) to push instead, or None to
    deliver nothing.
    """

    fault_hook = None

    def __init__(self, ring, *, name: str, codec: str, width: int, height: int, fps: float,
                 gop: int):
        self.name = name
        self.gop = gop
        self.codec = codec
        self.width = width
        self.height = height
        self.fps = fps
        self.profile_level_id: str | None = None
        self.frames = 0
        self.frames_rejected = 0
        self.last_frame_ns: int | None = None
        self.last_keyframe_ns: int | None = None
        self.frames_since_keyframe = 0
        self.error: str | None = None
        self._ring = ring
        self._stopping = threading.Event()
        self._ready = threading.Event()
        # Serialises pushes with stop(): once stop() holds it and sets _closed,
        # no push can follow, even from a thread stop() could not join.
        self._push_lock = threading.Lock()
        self._closed = False
        self._ring_keyframe_asked_ns: int | None = None
        self._frame_problem = FRAME_PROBLEM[codec]
        self._rejecting = False  # log the first of a run of unusable frames only
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name} {self.codec} {self.width}x{self.height}"
                f"@{self.fps:g} frames={self.frames} error={self.error!r}>")

    def start(self) -> None:
        """Start the source's thread. A source starts once."""
        if self._thread is not None:
            raise RuntimeError(f"source {self.name} was already started")
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread and wait up to `timeout` s for it: True if it ended,
        False if it is still stuck (the caller abandons it). Idempotent; after
        stop() returns nothing more is pushed into the ring, stuck or not."""
        self._stopping.set()
        with self._push_lock:
            self._closed = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("source %s: thread did not stop within %.1f s", self.name, timeout)
                return False
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the first frame is in the ring (codec parameters such as
        `profile_level_id` are then known) or the source failed. True if ready."""
        self._ready.wait(timeout)
        return self._ready.is_set() and self.error is None

    @abc.abstractmethod
    def request_keyframe(self) -> None:
        """Make the next encoded frame a keyframe. Thread-safe; callers rate-limit."""

    @abc.abstractmethod
    def _run(self) -> None:
        """The thread's body: produce frames with _push() until _stopping is set."""

    def _main(self) -> None:
        try:
            self._run()
        except SourceError as exc:
            self._fail(str(exc), exc)
        except Exception as exc:  # noqa: BLE001 - the thread's last stop: record, never escape
            self._fail(f"{self.name} source failed: {type(exc).__name__}: {exc}", exc)
        finally:
            self._ready.set()

    def _fail(self, message: str, exc: BaseException) -> None:
        self.error = message
        log.error("source %s stopped: %s", self.name, message,
                  exc_info=None if isinstance(exc, SourceError) else exc)
        self._stopping.set()

    def _push(self, data, capture_ns: int, pts: int, keyframe: bool) -> bool:
        """Push one frame; True if the ring took it. When the ring drops
        frames until a keyframe, ask our own encoder for one (bounded retry)."""
        if self.fault_hook is not None:
            altered = self.fault_hook(data, keyframe)
            if altered is None:
                return False
            data, keyframe = altered
        problem = self._frame_problem(data, keyframe)
        if problem is not None:
            self.frames_rejected += 1
            if not self._rejecting:
                self._rejecting = True
                log.warning("source %s: dropping unusable frames: %s", self.name, problem)
            return False
        self._rejecting = False
        self.last_frame_ns = time.monotonic_ns()
        if keyframe:
            self.last_keyframe_ns = self.last_frame_ns
            self.frames_since_keyframe = 0
        else:
            self.frames_since_keyframe += 1
        with self._push_lock:
            if self._closed:
                return False
            if self.profile_level_id is None and self.codec == "h264" and keyframe:
                sps = h264.find_sps(bytes(data))
                if sps is not None:
                    self.profile_level_id = h264.profile_level_id_from_sps(sps)
            accepted = self._ring.push(data, capture_ns, pts, keyframe)
        if accepted:
            self.frames += 1
            if keyframe:
                self._ring_keyframe_asked_ns = None
            self._ready.set()
            return True
        if self._ring.wants_keyframe:
            now = time.monotonic_ns()
            asked = self._ring_keyframe_asked_ns
            if asked is None or now - asked >= RING_KEYFRAME_RETRY_NS:
                self._ring_keyframe_asked_ns = now
                self.request_keyframe()
        return False
