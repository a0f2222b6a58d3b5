"""Snapshots: a JPEG of a camera's current picture, made from the frames it streams.

A `Snapshotter` is a tap on the camera's broadcaster (`Broadcaster.taps`). It
keeps copies of the frames from the last keyframe on, so that a snapshot can
decode the newest picture; the decoding (PyAV, in a worker thread) and the
JPEG encoding happen only when someone asks, at most one at a time, and the
JPEG is cached while the frame it shows is less than FRESH_S old: many
callers cost one decode, and a stream of callers at most about one a second.

Idle and active. Copying every frame costs a memcpy per frame and up to a
GOP of memory per camera, for nobody, if nobody asks for snapshots. So the
tap is idle (keeps nothing; `offer` is two comparisons) unless a snapshot
was asked for within the last ACTIVE_S. The trade-off: the first request
after an idle spell has no keyframe to decode from and waits for the next
one. It asks for one at once (through the broadcaster's rate-limited
request, which viewers share: a keyframe costs every viewer its bytes, so
this is at most one forced keyframe per idle spell, and none if a viewer
just asked), and waits at most a keyframe interval + 1 s for it (a request
refused by the rate limit leaves the source's own schedule). Later requests
within ACTIVE_S find the frames kept and answer within one decode.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time

import av

logger = logging.getLogger("rpistream.snapshot")

# A snapshot shows a frame captured less than this long before the request,
# and a cached JPEG is served while its frame is younger than this: "within a
# second of live", and a stream of callers costs at most one decode per second.
FRESH_S = 1.0
# The tap keeps frames while a snapshot was asked for within this long: a
# page refreshing its picture every few seconds keeps it active (each answer
# within one decode), one snapshot now and then costs nothing between them.
ACTIVE_S = 30.0
# How much longer than a keyframe interval the first request after an idle
# spell waits for the keyframe it needs: the source's encoder may put the
# requested keyframe a frame or two late, and the frames come through the ring.
KEYFRAME_WAIT_MARGIN_S = 1.0
# Frames kept from a keyframe on: two GOPs. Normally at most one is kept (the
# next keyframe starts afresh); a source whose keyframe is overdue by two
# GOPs is restarted by its camera's supervisor (stream/camera.py
# OVERDUE_GOPS), so a longer run never needs keeping. It is also the most a
# decode has to work through.
MAX_GOPS = 2
# Bytes kept: 8 MiB, two 2 s GOPs of a 16 Mbit/s camera (the Pi's hardware
# encoder's usual ceiling is 25 Mbit/s; four times rpistream's 4 Mbit/s
# default). Per camera, against the unit's MemoryMax (docs/DESIGN.md §5);
# a decode in progress may hold one more such run while the tap starts the
# next. Past either bound the tap keeps nothing until the next keyframe: the
# frames after a dropped one cannot be decoded.
MAX_BYTES = 8 * 1024 * 1024
# Decoder threads: one core at most, so a snapshot never takes the cores the
# camera's encoder and the event loop run on (a Pi 4 has four).
DECODE_THREADS = 1
# MJPEG quantizer scale, 2 (best) .. 31: 4 is visually close to the decoded
# picture at about a tenth of its raw size.
JPEG_QSCALE = 4
DECODERS = {"h264": "h264", "vp8": "vp8"}


class SnapshotUnavailable(Exception):
    """No picture can be made now (no keyframe in time, a stalled camera, a
    decode failure); the message says which, in words for an HTTP answer."""


def decode_to_jpeg(codec: str, frames: list[bytes]) -> bytes:
    """A JPEG of the last picture of `frames`, a run of encoded frames from a
    keyframe on. Blocking CPU work: for a worker thread."""
    try:
        decoder = av.CodecContext.create(DECODERS[codec], "r")
        decoder.thread_count = DECODE_THREADS
        last = None
        for data in frames:
            for picture in decoder.decode(av.Packet(data)):
                last = picture
        for picture in decoder.decode(None):  # flush: the decoder may hold the newest back
            last = picture
        if last is None:
            raise SnapshotUnavailable(f"the {codec} decoder made no picture from "
                                      f"{len(frames)} frames")
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = last.width, last.height
        encoder.pix_fmt = "yuvj420p"  # JPEG's full-range 4:2:0
        encoder.time_base = fractions.Fraction(1, 1)
        encoder.qmin = encoder.qmax = JPEG_QSCALE
        picture = last.reformat(format="yuvj420p")
        picture.pts = 0
        return b"".join(bytes(packet)
                        for packet in encoder.encode(picture) + encoder.encode(None))
    except av.error.FFmpegError as exc:
        raise SnapshotUnavailable(f"decoding {len(frames)} {codec} frames or encoding the "
                                  f"JPEG failed: {exc}") from exc


class Snapshotter:
    """One camera's snapshots: a broadcaster tap plus a one-entry JPEG cache.

    `offer()` is the tap (on the event loop, never blocking); `snapshot()`
    is for handlers on the loop. See the module docstring for what is kept
    when, and the bounds.
    """

    Unavailable = SnapshotUnavailable  # for callers in layers that do not import this one

    def __init__(self, camera: str, codec: str, request_keyframe, *, fps: float,
                 keyframe_interval: float, max_bytes: int = MAX_BYTES):
        """`request_keyframe()` asks the camera's source for a keyframe."""
        if codec not in DECODERS:
            raise ValueError(f"camera {camera}: no snapshots of codec {codec!r}: "
                             f"choose one of {sorted(DECODERS)}")
        self.camera = camera
        self.codec = codec
        self._request_keyframe = request_keyframe
        self.max_frames = MAX_GOPS * max(1, round(fps * keyframe_interval))
        self.max_bytes = max_bytes
        self.keyframe_wait = keyframe_interval + KEYFRAME_WAIT_MARGIN_S
        # The frames from the last keyframe on (copies: the tap's memoryview
        # is valid only during offer()); empty while idle or past a bound.
        self._frames: list[bytes] = []
        self._newest_ns = 0  # capture time of the newest kept frame
        self.held_bytes = 0
        self._active_until_ns = 0  # keep frames while capture times are before this
        self._keyframe: asyncio.Future | None = None  # the first request's wait
        self._making: asyncio.Task | None = None  # the decode callers share
        self._jpeg: bytes | None = None
        self._jpeg_capture_ns = 0
        self.decodes = 0
        self.decode_failures = 0
        self.dropped_runs = 0  # runs cut short by a bound

    @property
    def held_frames(self) -> int:
        return len(self._frames)

    # --- the tap ------------------------------------------------------------

    def offer(self, data, capture_ns: int, keyframe: bool) -> None:
        if capture_ns >= self._active_until_ns:  # idle: capture times are monotonic ns
            if self._frames:  # just gone idle: let go of the frames and the stale JPEG
                self._forget()
                self._jpeg = None
            return
        if keyframe:
            self._frames = [bytes(data)]
            self.held_bytes = len(data)
            self._newest_ns = capture_ns
            if self._keyframe is not None and not self._keyframe.done():
                self._keyframe.set_result(None)
            return
        if not self._frames:
            return  # a run cut short, or activated between keyframes: wait for one
        if (len(self._frames) >= self.max_frames
                or self.held_bytes + len(data) > self.max_bytes):
            self.dropped_runs += 1
            self._forget()
            return
        self._frames.append(bytes(data))
        self.held_bytes += len(data)
        self._newest_ns = capture_ns

    def _forget(self) -> None:
        self._frames = []
        self.held_bytes = 0

    # --- snapshots ----------------------------------------------------------

    async def snapshot(self) -> bytes:
        """A JPEG of a frame captured less than FRESH_S before the call, cached
        for callers until its frame is FRESH_S old; concurrent callers share
        one decode. Raises SnapshotUnavailable with the reason."""
        now_ns = time.monotonic_ns()
        self._active_until_ns = now_ns + int(ACTIVE_S * 1e9)
        if self._jpeg is not None and now_ns - self._jpeg_capture_ns < FRESH_S * 1e9:
            return self._jpeg
        if self._making is None:
            self._making = asyncio.create_task(self._make(), name=f"snapshot {self.camera}")
            self._making.add_done_callback(self._made)
        # Shielded: a caller that goes away must not cancel the others' decode.
        return await asyncio.shield(self._making)

    def _made(self, task: asyncio.Task) -> None:
        self._making = None
        if not task.cancelled():
            task.exception()  # retrieved here, so it is not logged if every caller left

    async def _make(self) -> bytes:
        if not self._frames:
            await self._wait_for_keyframe()
            if not self._frames:  # the run past a bound before this task ran
                raise SnapshotUnavailable(
                    f"camera {self.camera}: the frames after its keyframe exceeded "
                    f"{self.max_frames} frames or {self.max_bytes} bytes")
        age_s = (time.monotonic_ns() - self._newest_ns) / 1e9
        if age_s >= FRESH_S:
            raise SnapshotUnavailable(f"camera {self.camera} has sent no frame for "
                                      f"{age_s:.1f} s")
        if self._newest_ns == self._jpeg_capture_ns and self._jpeg is not None:
            return self._jpeg  # nothing newer came: the same picture again
        frames, capture_ns = list(self._frames), self._newest_ns
        self.decodes += 1
        try:
            jpeg = await asyncio.get_running_loop().run_in_executor(
                None, decode_to_jpeg, self.codec, frames)
        except SnapshotUnavailable as exc:
            self.decode_failures += 1
            logger.warning("camera %s: snapshot failed: %s", self.camera, exc)
            raise SnapshotUnavailable(f"camera {self.camera}: {exc}") from None
        self._jpeg, self._jpeg_capture_ns = jpeg, capture_ns
        return jpeg

    async def _wait_for_keyframe(self) -> None:
        self._keyframe = asyncio.get_running_loop().create_future()
        self._request_keyframe()
        try:
            await asyncio.wait_for(self._keyframe, self.keyframe_wait)
        except TimeoutError:
            raise SnapshotUnavailable(
                f"camera {self.camera} sent no keyframe within {self.keyframe_wait:g} s "
                f"to make a snapshot from") from None
        finally:
            self._keyframe = None

    def stop(self) -> None:
        """Let go of the kept frames and the cached JPEG, and end a wait in progress."""
        if self._making is not None:
            self._making.cancel()
        self._active_until_ns = 0
        self._forget()
        self._jpeg = None

    def stats(self) -> dict:
        return {"decodes": self.decodes, "decode_failures": self.decode_failures,
                "held_frames": self.held_frames, "held_bytes": self.held_bytes,
                "dropped_runs": self.dropped_runs}
