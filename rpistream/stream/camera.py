"""A configured camera: its source, ring, packetizer and broadcaster, owned together,
and the supervisor that restarts its source when it stalls or fails."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from rpistream.core.heap import release_freed_memory
from rpistream.core.ring import FrameRing
from rpistream.core.rtp import H264Packetizer, Vp8Packetizer, headroom
from rpistream.config.schema import RECORDINGS
from rpistream.record import Recorder, list_segments
from rpistream.sources import create_source
from rpistream.stream.broadcaster import Broadcaster
from rpistream.stream.health import FAILED, STALLED, Health, default_stall_timeout
from rpistream.stream.snapshot import Snapshotter

logger = logging.getLogger("rpistream.camera")

# libwebrtc's default largest RTP packet: with SRTP's tag, UDP and IPv6 headers
# it stays under the 1280-byte IPv6 minimum MTU, so no path fragments it.
MTU = 1200
# One-byte header-extension elements per packet: mid (RFC 8843, 1 + up to 7
# bytes; browsers use "0", "1", ...) and abs-send-time (1 + 3 bytes).
EXT_ROOM = 12
# The ring sits between the camera thread and the event loop. 4 MiB holds about
# 8 s of 4 Mbit/s video, or a dozen 1080p keyframes, so only a stalled event
# loop fills it (then frames drop and the ring waits for a keyframe) — and a
# frame up to 2 MiB (half the ring) always fits. Faster cameras get 1 s of video.
MIN_RING_BYTES = 4 * 1024 * 1024
# How long a source may take to deliver its first frame (a Pi camera and its
# hardware encoder start in about a second).
FIRST_FRAME_TIMEOUT = 15.0
# How long a restart waits for the old source's thread to stop before it
# abandons it (picamera2's own stop gives up on a V4L2 encoder after 0.4 s;
# the rest is libcamera). The wait runs off the event loop.
STOP_TIMEOUT = 5.0
# A keyframe is overdue after this many GOPs of usable frames without one.
OVERDUE_GOPS = 2
# How often the supervisor looks at the source: a tenth of the shortest stall
# timeout the config allows, so a stall is seen within 10 % of its timeout.
CHECK_INTERVAL = 0.05
# The codecs' RTP payload format names (RFC 6184 §8.1, RFC 7741 §6.1).
MIME_TYPES = {"h264": "video/H264", "vp8": "video/VP8"}


def ring_bytes(bitrate: int) -> int:
    return max(MIN_RING_BYTES, (bitrate // 8 + 7) & ~7)


def fec_schemes(codec: str, setting: str) -> tuple[str, ...]:
    """The FEC schemes a viewer of this camera may get, best first; each
    session takes the first its offer includes (docs/DESIGN.md §6). "auto":
    FlexFEC-03 for H.264, whose ULPFEC packets would leave gaps in the media
    sequence numbers that stall it until a keyframe; RED+ULPFEC for VP8, which
    Firefox decodes too, else FlexFEC-03."""
    if setting == "off":
        return ()
    if setting == "ulpfec":
        return ("ulpfec",)
    if setting == "flexfec" or codec == "h264":
        return ("flexfec-03",)
    return ("ulpfec", "flexfec-03")


class Camera:
    """One camera. Its source is replaced when it stalls or fails (a new one
    each time, from the same config); everything else lives as long as the
    camera, so its viewers stay connected across a restart."""

    def __init__(self, config, *, keyframe_min_interval: float,
                 give_up_after: float | None = None, give_up=None):
        """`give_up(reason)` is called once the camera has not been live for
        `give_up_after` seconds (None: never)."""
        self.name = config.name
        self.config = config
        self.ring = FrameRing(ring_bytes(config.bitrate))
        self.source = None
        self.health = Health(self.name)
        self.stall_timeout = config.stall_timeout or default_stall_timeout(
            config.fps, config.keyframe_interval)
        self.fec_schemes = fec_schemes(config.codec, config.fec)
        packetizer_class = H264Packetizer if config.codec == "h264" else Vp8Packetizer
        room = headroom(EXT_ROOM, rtx=config.retransmit, ulpfec="ulpfec" in self.fec_schemes,
                        flexfec="flexfec-03" in self.fec_schemes)
        self.packetizer = packetizer_class(mtu=MTU, ext_room=EXT_ROOM, headroom=room)
        self.broadcaster = Broadcaster(self.name, self.ring, self.request_keyframe,
                                       self.packetizer,
                                       keyframe_min_interval=keyframe_min_interval,
                                       fec_rate=config.fec_rate,
                                       fec_max_frames=config.fec_max_frames)
        self.snapshots = Snapshotter(
            self.name, config.codec, lambda: self.broadcaster.request_keyframe("snapshot"),
            fps=config.fps, keyframe_interval=config.keyframe_interval)
        self.broadcaster.taps.append(self.snapshots)
        # The codec's SDP format parameters (RFC 6184 §8.1 for H.264), known
        # once the first frame has come: the answer to every offer carries them.
        self.fmtp: dict[str, str] | None = None
        self._give_up_after = give_up_after
        self._give_up = give_up
        self.recorder: Recorder | None = None
        self._supervisor: asyncio.Task | None = None
        self._restarting = asyncio.Lock()  # one restart at a time
        self._rejected_by_old_sources = 0

    @property
    def ext_room(self) -> int:
        return self.packetizer.ext_room

    @property
    def rtp_header_size(self) -> int:
        return 12 + (4 + self.packetizer.ext_room if self.packetizer.ext_room else 0)

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.config.codec]

    @property
    def frames_rejected(self) -> int:
        """Unusable frames the sources dropped (docs/DESIGN.md §4), all of them."""
        current = self.source.frames_rejected if self.source is not None else 0
        return self._rejected_by_old_sources + current

    def request_keyframe(self) -> None:
        if self.source is not None:
            self.source.request_keyframe()

    async def start(self) -> None:
        """Start the source and wait for its first frame (only then is the
        H.264 profile known, which the SDP answer must carry), then supervise
        it. A camera that cannot start is not an error here: it is failed,
        retried with backoff, and reported wherever health is."""
        self.broadcaster.start()
        await self._start_source()
        if self.config.record.enabled:
            await self.start_recording()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"camera {self.name}")
        self._supervisor.add_done_callback(self._supervisor_ended)

    def _supervisor_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("camera %s: its supervisor failed; it is no longer restarted",
                         self.name, exc_info=task.exception())

    # --- recording ------------------------------------------------------------

    @property
    def recording_directory(self) -> Path:
        return Path(self.config.record.directory or f"{RECORDINGS}/{self.name}")

    async def start_recording(self) -> str | None:
        """Record what the broadcaster takes from the ring, on the recorder's
        own thread; None, or why it cannot (logged: streaming goes on)."""
        if self.recorder is not None:
            return None
        record, source = self.config.record, self.source
        width, height = ((source.width, source.height) if source is not None
                         else (self.config.width, self.config.height))
        recorder = Recorder(self.name, self.config.codec, width, height,
                            directory=self.recording_directory,
                            segment_seconds=record.segment_seconds, max_age_s=record.max_age,
                            max_bytes=record.max_bytes, min_free_bytes=record.min_free_bytes)
        try:  # creates the directory and recovers a crash's leftovers: disk work
            await asyncio.get_running_loop().run_in_executor(None, recorder.start)
        except OSError as exc:
            logger.error("%s; streaming goes on without recording", exc)
            return str(exc)
        self.recorder = recorder
        self.broadcaster.taps.append(recorder)
        return None

    async def stop_recording(self) -> None:
        """Complete the segment being written and stop (a bounded wait, off the loop)."""
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            self.broadcaster.taps.remove(recorder)
            await asyncio.get_running_loop().run_in_executor(None, recorder.stop)

    def recordings(self) -> list:
        """The completed segments, oldest first (a directory listing: not on the loop)."""
        try:
            return list_segments(self.recording_directory)
        except FileNotFoundError:
            return []

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        await self.stop_recording()
        self.broadcaster.stop()
        self.snapshots.stop()
        if self.source is not None:
            await self._stop_source()
        self.ring.close()

    # --- supervision ------------------------------------------------------------

    async def _supervise(self) -> None:
        health = self.health
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            now = time.monotonic()
            if health.live:
                problem = self._problem(now)
                if problem is not None:
                    health.set_down(*problem)
            elif health.retry_at is not None and now >= health.retry_at:
                await self.restart()
            if (self._give_up_after is not None
                    and health.not_live_for(time.monotonic()) >= self._give_up_after):
                self._give_up(f"camera {self.name} has not been live for "
                              f"{self._give_up_after:g} s: {health.reason}")
                self._give_up_after = None

    def _problem(self, now: float) -> tuple[str, str] | None:
        """(FAILED or STALLED, why) if the live source is no longer, else None."""
        source = self.source
        if source.error is not None:
            return FAILED, source.error
        if not source.running:
            return FAILED, "its source stopped by itself (end of a file played once)"
        rejected = (f" ({source.frames_rejected} unusable frames dropped)"
                    if source.frames_rejected else "")
        silent = now - source.last_frame_ns / 1e9
        if silent > self.stall_timeout:
            return STALLED, f"no usable frame for {silent:.1f} s{rejected}"
        # Frames that come but never a keyframe (keyframes cut short, say) let
        # no viewer join or recover: a stall too, once the source's own
        # keyframe is overdue by a whole GOP (a forced keyframe, or an
        # encoder's scene cut, may move the next one later).
        if source.frames_since_keyframe > OVERDUE_GOPS * source.gop:
            return STALLED, (f"no usable keyframe in {source.frames_since_keyframe} frames (the "
                             f"source makes one every {source.gop}){rejected}")
        return None

    async def restart(self) -> None:
        """Stop the source (abandoning it if it will not stop) and start a new one."""
        async with self._restarting:
            self.health.set_restarting()
            if self.source is not None:  # None if the last attempt could not make one
                await self._stop_source()
            self.broadcaster.restart_stream()
            await self._start_source()
            # The old source's encoder and buffers are freed by now.
            await asyncio.get_running_loop().run_in_executor(None, release_freed_memory)

    async def _stop_source(self) -> None:
        """Stop the current source in a worker thread; one whose thread will
        not end within STOP_TIMEOUT is abandoned (it can push nothing more)."""
        source, self.source = self.source, None
        try:
            stopped = await asyncio.get_running_loop().run_in_executor(
                None, source.stop, STOP_TIMEOUT)
        finally:
            self._rejected_by_old_sources += source.frames_rejected
        if not stopped:
            self.health.abandoned()
            logger.error("camera %s: abandoned source %s, whose thread did not stop within "
                         "%g s (it may keep holding the camera)", self.name, source.name,
                         STOP_TIMEOUT)

    async def _start_source(self) -> None:
        """A new source from the config, started; live once it delivers a frame."""
        try:
            self.source = source = create_source(self.config, self.ring)
        except ValueError as exc:  # what only this machine can tell: a file, an encoder
            self.health.set_down(FAILED, str(exc))
            return
        source.start()
        # A source starts with a keyframe: viewers resume on it.
        deadline = time.monotonic() + FIRST_FRAME_TIMEOUT
        while (source.last_keyframe_ns is None and source.running
               and time.monotonic() < deadline):
            await asyncio.sleep(CHECK_INTERVAL)
        if source.last_keyframe_ns is None:
            self.health.set_down(FAILED, source.error or (
                "its source stopped before its first frame" if not source.running
                else f"no keyframe within {FIRST_FRAME_TIMEOUT:g} s of starting"))
            return
        if self.fmtp is None:
            self.fmtp = self._format_parameters(source)
        self.health.set_live()

    def _format_parameters(self, source) -> dict[str, str]:
        if self.config.codec != "h264":
            return {}
        return {"level-asymmetry-allowed": "1", "packetization-mode": "1",
                "profile-level-id": source.profile_level_id}

    def info(self) -> dict:
        config, health = self.config, self.health.info()
        return {
            "name": self.name, "source": config.source, "codec": config.codec,
            "width": config.width, "height": config.height, "fps": config.fps,
            "bitrate": config.bitrate, "whep": f"/cameras/{self.name}/whep",
            "viewers": len(self.broadcaster.viewers),
            "health": {**health, "frames_rejected": self.frames_rejected},
            "error": None if self.health.live else health["reason"],
            # Why a test pattern shows in place of the Pi camera, if it does.
            "fallback_reason": config.fallback_reason,
            "profile_level_id": (self.fmtp or {}).get("profile-level-id"),
            "recording": None if self.recorder is None else self.recorder.stats(),
        }
