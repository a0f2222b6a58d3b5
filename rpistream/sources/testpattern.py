"""The test-pattern source: a moving picture with a block code, encoded with PyAV.

The embedded default where no camera is found, and the source the tests and
benchmarks use: every frame carries its frame number and capture time in a
block code (rpistream/sources/blockcode.py) that survives encoding, so latency
and continuity can be read from decoded pixels anywhere downstream.

H.264 comes from libx264 (constrained baseline, zerolatency: no B-frames, no
lookahead, one packet out per frame in), VP8 from libvpx in realtime mode.
"""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
from av.video.frame import PictureType

from rpistream.sources import blockcode
from rpistream.sources.base import PTS_HZ, Source
from rpistream.sources.picture import MovingPicture

# libx264's cheapest preset: the test pattern must leave a Pi's CPU to the rest
# of the server. It only makes baseline tools, which is what we ask for.
X264_PRESET = "ultrafast"
# libvpx realtime speed: 8 is the fastest setting that still adapts quality
# (VP8 accepts -16..16; >= 6 is the realtime range).
VPX_CPU_USED = 8


def gop_frames(keyframe_interval: float, fps: float) -> int:
    """Frames from one keyframe to the next."""
    return max(1, round(keyframe_interval * fps))


def open_encoder(codec: str, width: int, height: int, fps: float, bitrate: int,
                 keyframe_interval: float) -> av.CodecContext:
    """An opened PyAV encoder for yuv420p frames with 90 kHz pts."""
    gop = gop_frames(keyframe_interval, fps)
    name = {"h264": "libx264", "vp8": "libvpx"}[codec]
    try:
        ctx = av.CodecContext.create(name, "w")
    except av.error.FFmpegError as exc:
        raise ValueError(f"PyAV's FFmpeg has no {name} encoder ({exc}): install a PyAV "
                         f"built with {name} (the PyPI wheels have it)") from exc
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, PTS_HZ)
    ctx.framerate = Fraction(fps).limit_denominator(1001)
    ctx.bit_rate = bitrate
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    # One second of VBV buffer at the target rate: keyframes may burst to about
    # that size, and the rate stays near the target over any one-second window.
    rate = {"maxrate": str(bitrate), "bufsize": str(bitrate)}
    if codec == "h264":
        ctx.options = {
            **rate,
            "preset": X264_PRESET,
            "tune": "zerolatency",
            # RFC 6184 §8.1: baseline with constraint_set1 is Constrained
            # Baseline (profile-level-id 42c0xx/42e0xx), what every browser decodes.
            "profile": "baseline",
            # A forced keyframe (pict_type I) must be an IDR, so that a viewer
            # who joins or lost packets can start decoding from it.
            "forced-idr": "1",
        }
    else:
        ctx.options = {
            **rate,
            "minrate": str(bitrate),  # minrate == maxrate == bitrate: libvpx CBR
            "deadline": "realtime",
            "cpu-used": str(VPX_CPU_USED),
            "lag-in-frames": "0",
            "auto-alt-ref": "0",
            # Frames stay decodable after a loss of earlier non-key frames'
            # probability updates (VPX_ERROR_RESILIENT_DEFAULT).
            "error-resilient": "default",
            "keyint_min": str(gop),
        }
    try:
        ctx.open()
    except av.error.FFmpegError as exc:
        raise ValueError(f"could not open the {name} encoder for {width}x{height} at "
                         f"{fps:g} fps and {bitrate} bit/s: {exc}") from exc
    return ctx


class TestPatternSource(Source):
    """Moving colour bars and a block code, encoded live, paced at `fps`."""

    def __init__(self, ring, *, codec: str, width: int, height: int, fps: float,
                 bitrate: int, keyframe_interval: float):
        super().__init__(ring, name="testpattern", codec=codec, width=width, height=height,
                         fps=fps, gop=gop_frames(keyframe_interval, fps))
        self._picture = MovingPicture(width, height)
        self._encoder = open_encoder(codec, width, height, fps, bitrate, keyframe_interval)
        self._keyframe_requested = False

    def request_keyframe(self) -> None:
        # A plain attribute: assignment is atomic, and a request that lands
        # while the thread is reading it is folded into that frame's keyframe.
        self._keyframe_requested = True

    def _run(self) -> None:
        period_ns = 1e9 / self.fps
        buffer = np.empty((self.height * 3 // 2, self.width), dtype=np.uint8)
        y, u, v = self._picture.planes(buffer)
        start_ns = time.monotonic_ns()
        slot = 0  # index on the fps schedule: pts and timing
        number = 0  # frames made: the block code's frame number
        while not self._stopping.is_set():
            due_ns = start_ns + round(slot * period_ns)
            now_ns = time.monotonic_ns()
            if now_ns < due_ns:
                if self._stopping.wait((due_ns - now_ns) / 1e9):
                    break
            elif now_ns - due_ns >= period_ns:
                # Fell behind (CPU starved, stopped in a debugger): skip the
                # missed slots instead of producing a burst to catch up.
                slot = int((now_ns - start_ns) // period_ns)
            capture_ns = time.monotonic_ns()
            self._picture.draw(buffer, number)
            blockcode.draw(y, u, v, number, time.time_ns() // 1_000_000)
            frame = av.VideoFrame.from_ndarray(buffer, format="yuv420p")
            frame.pts = round(slot * PTS_HZ / self.fps)
            if self._keyframe_requested:
                self._keyframe_requested = False
                frame.pict_type = PictureType.I
            for packet in self._encoder.encode(frame):
                self._push(packet, capture_ns, packet.pts, packet.is_keyframe)
            number += 1
            slot += 1
