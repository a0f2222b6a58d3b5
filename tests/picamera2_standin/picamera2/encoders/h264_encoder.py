"""H264Encoder, standing in for picamera2's V4L2 hardware encoder with PyAV libx264.

Like the V4L2 encoder, frames are queued by the camera thread (_encode) and
encoded and output on the encoder's own thread, keyframe flag from the
encoder, timestamp in microseconds since the first frame.
"""

import queue
import threading
from fractions import Fraction

import av
from av.video.frame import PictureType

from .encoder import Encoder

# picamera2's V4L2Encoder requests 16 OUTPUT buffers: the camera blocks when
# the encoder is that far behind.
NUM_OUTPUT_BUFFERS = 16
# picamera2's names (h264_encoder.py) to libx264's profiles.
PROFILES = {"baseline": "baseline", "constrained baseline": "baseline",
            "main": "main", "high": "high"}


class H264Encoder(Encoder):
    def __init__(self, bitrate=None, repeat=True, iperiod=None, framerate=None,
                 enable_sps_framerate=False, qp=None, profile=None):
        super().__init__()
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.framerate = framerate
        self._enable_framerate = enable_sps_framerate
        self.qp = qp
        self.profile = profile
        self._key_frames_requested = 0

    def force_key_frame(self):
        self._key_frames_requested += 1

    def _start(self):
        if self.profile is not None and self.profile.lower() not in PROFILES:
            raise RuntimeError("Profile " + self.profile + " not recognised")
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = self._width, self._height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        ctx.framerate = Fraction(self.framerate or 30).limit_denominator(1001)
        if self.bitrate is not None:
            ctx.bit_rate = self.bitrate
        ctx.gop_size = self.iperiod or 60
        ctx.max_b_frames = 0
        options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1"}
        if self.profile is not None:
            options["profile"] = PROFILES[self.profile.lower()]
        ctx.options = options
        if not self.repeat:
            ctx.flags |= av.codec.context.Flags.GLOBAL_HEADER
        ctx.open()
        self._codec = ctx
        self._frames = queue.Queue(NUM_OUTPUT_BUFFERS)
        self.thread = threading.Thread(target=self.thread_poll, daemon=True)
        self.thread.start()

    def _stop(self):
        self.thread.join()

    def _encode(self, stream, request):
        if not self._running:
            return
        self._frames.put((request.array, self._timestamp(request)))

    def thread_poll(self):
        while self._running or not self._frames.empty():
            try:
                picture, timestamp_us = self._frames.get(timeout=0.2)
            except queue.Empty:
                continue
            frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
            frame.pts = timestamp_us
            if self._key_frames_requested:
                self._key_frames_requested = 0
                frame.pict_type = PictureType.I
            for packet in self._codec.encode(frame):
                self.outputframe(bytes(packet), packet.is_keyframe, packet.pts)
