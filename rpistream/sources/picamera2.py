"""The picamera2 source: a Raspberry Pi camera, H.264 encoded once, straight into the ring.

picamera2 (python3-picamera2 on Raspberry Pi OS) drives the camera through
libcamera and feeds an H264Encoder: on a Pi <= 4 the hardware encoder behind
/dev/video11 (V4L2, "bcm2835-codec-encode"); on a Pi 5, which has no video
encoder, picamera2.encoders.H264Encoder is its LibavH264Encoder (libx264).
Either way the encoder hands each access unit to an Output's outputframe();
ours pushes it into the ring as it is: no copy beyond the ring's, no re-encode.

picamera2's API, as read from raspberrypi/picamera2 (picamera2/picamera2.py,
encoders/__init__.py, encoders/encoder.py, encoders/h264_encoder.py,
encoders/v4l2_encoder.py, encoders/libav_h264_encoder.py, outputs/output.py):

- Picamera2(camera_num) opens the camera_num-th entry of
  Picamera2.global_camera_info() (IndexError past the end) and raises
  RuntimeError("Camera __init__ sequence did not complete.") when libcamera
  cannot acquire it, e.g. another process has it.
- start_recording(encoder, output) = configure (if needed) + start_encoder +
  start; stop_recording() = stop + stop_encoder; close() releases the camera.
- Output.outputframe(frame, keyframe=True, timestamp=None, packet=None,
  audio=False) is called on the encoder's thread (V4L2: its poll thread;
  libav: the camera's request thread). frame: the Annex-B access unit as
  bytes; keyframe: V4L2_BUF_FLAG_KEYFRAME or the libav packet's flag;
  timestamp: microseconds since the first frame, from the sensor timestamp
  (libcamera SensorTimestamp, CLOCK_BOOTTIME), whose first value is kept in
  encoder.firsttimestamp (us).
- H264Encoder(bitrate, repeat=True, iperiod, framerate, ..., profile):
  repeat puts SPS/PPS before every IDR (V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER);
  iperiod is the keyframe interval in frames.
- Keyframes on demand: encoder.force_key_frame() (picamera2 PR #1317, 2025,
  for both the V4L2 and the libav encoder). Older picamera2 lacks it; there we
  set the V4L2 button control V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME with
  VIDIOC_S_CTRL on the V4L2 encoder's open device (encoder.vd), which the
  driver passes to the firmware as an I-frame request for the next frame.
  request_keyframe() only flags the request; the source's own thread makes
  the call, never picamera2's threads.
- The libav encoder's force_key_frame() cannot be used with the PyAV
  rpistream needs (>= 14): picamera2 (0.3.38) then sets frame.pict_type = "I"
  in LibavH264Encoder._encode, which PyAV 14 refuses ("an integer is
  required": PictureType became an IntEnum, PyAV PR #1634); the TypeError
  kills picamera2's event loop thread, frames stop and stop_recording() waits
  for the dead loop forever. So for that encoder the keyframe is asked of the
  PyAV stream it encodes with (encoder._stream, made by its _start() when
  start_recording starts it): a wrapper sets PictureType.I on the next frame
  it is handed.
- The same _start() sets the codec's thread_type to FRAME, which overrides
  the zerolatency tune's sliced threads: libx264 then holds a frame per
  thread before the first comes out, and makes more threads on more cores
  (a Pi 5 has 4). The wrapper puts SLICE back before the codec opens
  on the first frame: the threads share each frame and no frame waits.
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import struct
import threading
import time

from rpistream.sources import camera_stack
from rpistream.sources.base import PTS_HZ, Source, SourceError

log = logging.getLogger("rpistream.sources")

# linux/v4l2-controls.h: V4L2_CID_CODEC_BASE (0x990900) + 229, a button control.
V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME = 0x00990900 + 229
# linux/videodev2.h: _IOWR('V', 28, struct v4l2_control { __u32 id; __s32 value; }).
VIDIOC_S_CTRL = 0xC008561C
# How long stop() may wait for picamera2 to stop the camera and encoder. Its
# V4L2 poll thread gives up on the encoder after 400 ms; the rest is libcamera.
STOP_TIMEOUT = 5.0


def import_picamera2():
    """(Picamera2, H264Encoder, Output, Transform) from picamera2 and libcamera
    (which python3-picamera2 depends on); ValueError, one line naming the
    module that failed and what to do, if they cannot be imported."""
    try:
        picamera2 = importlib.import_module("picamera2")
        encoders = importlib.import_module("picamera2.encoders")
        outputs = importlib.import_module("picamera2.outputs")
        libcamera = importlib.import_module("libcamera")
    except Exception as exc:  # noqa: BLE001 - an extension's import raises anything
        raise ValueError(camera_stack.explain(exc)) from exc
    return picamera2.Picamera2, encoders.H264Encoder, outputs.Output, libcamera.Transform


class Picamera2Source(Source):
    """Camera `camera_num` (libcamera's numbering) encoded to H.264 by picamera2,
    mirrored by `hflip` and turned upside down by `vflip` in the camera's ISP."""

    def __init__(self, ring, *, width: int, height: int, fps: float, bitrate: int,
                 keyframe_interval: float, camera_num: int = 0, hflip: bool = False,
                 vflip: bool = False):
        (self._picamera2, self._h264_encoder, output_base,
         self._transform) = import_picamera2()
        # H.264 only: no Raspberry Pi has a VP8 hardware encoder.
        iperiod = max(1, round(keyframe_interval * fps))  # picamera2's GOP, in frames
        super().__init__(ring, name=f"picamera2:{camera_num}", codec="h264", width=width,
                         height=height, fps=fps, gop=iperiod)
        self.camera_num = camera_num
        self.hflip, self.vflip = hflip, vflip
        self._bitrate = bitrate
        self._iperiod = iperiod
        self._output_class = _ring_output_class(output_base)
        self._failure: str | None = None
        # Set on stop, failure and keyframe requests: what the thread waits for.
        self._attention = threading.Event()
        self._keyframe_wanted = False
        self._cannot_force_logged = False

    def request_keyframe(self) -> None:
        # Only flag it: the source's own thread asks the encoder. Callers run
        # on the event loop or, when the ring drops, inside outputframe() on
        # the encoder's thread, where picamera2 may hold its encoder lock.
        self._keyframe_wanted = True
        self._attention.set()

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        self._stopping.set()
        self._attention.set()
        return super().stop(timeout)

    def _run(self) -> None:
        cameras = self._picamera2.global_camera_info()
        if not cameras:
            raise SourceError(
                "no camera found: check the ribbon cable and that the camera is enabled "
                "(camera_auto_detect=1 in /boot/firmware/config.txt), then "
                "`rpicam-hello --list-cameras`")
        if not 0 <= self.camera_num < len(cameras):
            models = ", ".join(f"{i}: {c.get('Model', '?')}" for i, c in enumerate(cameras))
            raise SourceError(f"camera {self.camera_num} not found; picamera2 sees {models}: "
                              f"set camera_num to one of those numbers")
        model = cameras[self.camera_num].get("Model", "?")
        try:
            picam2 = self._picamera2(self.camera_num)
        except RuntimeError as exc:
            raise SourceError(
                f"cannot open camera {self.camera_num} ({model}): {exc} It is most likely in "
                f"use by another program (rpicam-vid, libcamera-hello, motion, another "
                f"rpistream): stop that program") from exc
        try:
            self._record(picam2)
        finally:
            picam2.close()
        if self._failure is not None:
            raise SourceError(self._failure)

    def _record(self, picam2) -> None:
        config = picam2.create_video_configuration(
            main={"size": (self.width, self.height), "format": "YUV420"},
            transform=self._transform(hflip=self.hflip, vflip=self.vflip),
            controls={"FrameRate": self.fps})
        picam2.configure(config)
        try:
            encoder = self._h264_encoder(bitrate=self._bitrate, repeat=True,
                                         iperiod=self._iperiod, framerate=self.fps,
                                         profile=self._profile())
        except TypeError as exc:
            raise SourceError(f"this picamera2's H264Encoder is too old ({exc}): "
                              f"upgrade python3-picamera2") from exc
        if is_libav(encoder):
            _wrap_stream_on_start(encoder)
        picam2.start_recording(encoder, self._output_class(self, encoder))
        try:
            while not self._stopping.is_set():
                self._attention.wait()
                self._attention.clear()
                if self._keyframe_wanted:
                    self._keyframe_wanted = False
                    self._force_keyframe(encoder)
        finally:
            picam2.stop_recording()

    def _force_keyframe(self, encoder) -> None:
        if is_libav(encoder):
            encoder._stream.keyframe_wanted = True
            return
        force = getattr(encoder, "force_key_frame", None)
        if force is not None:
            force()
            return
        device = getattr(encoder, "vd", None)
        if device is not None and not device.closed:
            try:
                fcntl.ioctl(device, VIDIOC_S_CTRL,
                            struct.pack("<Ii", V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1))
            except OSError as exc:
                log.warning("source %s: V4L2 keyframe request failed: %s", self.name, exc)
            return
        if not self._cannot_force_logged:
            self._cannot_force_logged = True
            log.warning("source %s: this picamera2's %s cannot make keyframes on demand; "
                        "viewers wait for the next scheduled one. Upgrade "
                        "python3-picamera2 for encoder.force_key_frame()",
                        self.name, type(encoder).__name__)

    def _profile(self) -> str | None:
        """The H.264 profile to ask for. RFC 6184 §8.1: Constrained Baseline is
        what every WebRTC peer decodes. The V4L2 encoder takes it as a control;
        picamera2's libav encoder takes no baseline name reliably, but its
        default "ultrafast" preset makes baseline anyway."""
        if is_libav(self._h264_encoder):
            return None
        return "constrained baseline"

    def _on_frame(self, frame, keyframe: bool, timestamp, first_timestamp) -> None:
        """outputframe() on picamera2's encoder thread: push into the ring.
        Nothing may raise here: it would kill picamera2's thread silently."""
        try:
            capture_ns = _capture_monotonic_ns(timestamp, first_timestamp)
            pts = (timestamp or 0) * PTS_HZ // 1_000_000
            self._push(frame, capture_ns, pts, keyframe)
        except Exception as exc:  # noqa: BLE001 - reported through the source's error
            if self._failure is None:
                self._failure = f"pushing a camera frame failed: {type(exc).__name__}: {exc}"
            self._stopping.set()
            self._attention.set()


def is_libav(encoder) -> bool:
    """Whether `encoder` (an instance or class) is picamera2's software
    (libav) H.264 encoder, the Pi 5's."""
    cls = encoder if isinstance(encoder, type) else type(encoder)
    return cls.__name__ == "LibavH264Encoder"


def _wrap_stream_on_start(encoder) -> None:
    """Have picamera2's libav encoder encode through a _KeyframeStream from
    the moment its _start() has made the stream, before any frame."""
    start = encoder._start

    def start_then_wrap():
        start()
        encoder._stream = _KeyframeStream(encoder._stream)

    encoder._start = start_then_wrap


class _KeyframeStream:
    """picamera2's libav encoder's PyAV stream, with keyframes on demand the
    way PyAV >= 14 takes them and sliced threads (see the module's doc): the
    next frame after a request is encoded as PictureType.I. Set on the
    source's thread, read on picamera2's; a bool needs no lock under the GIL."""

    def __init__(self, stream):
        from av.codec.context import ThreadType
        from av.video.frame import PictureType  # PyAV >= 14, as rpistream requires

        stream.codec_context.thread_type = ThreadType.SLICE  # the codec opens on frame 1
        self._stream = stream
        self._intra = PictureType.I
        self.keyframe_wanted = False

    def encode(self, frame=None):
        if frame is not None and self.keyframe_wanted:
            self.keyframe_wanted = False
            frame.pict_type = self._intra
        return self._stream.encode(frame)

    def __getattr__(self, name):  # everything else is the stream's
        return getattr(self._stream, name)


def _capture_monotonic_ns(timestamp, first_timestamp) -> int:
    """The frame's sensor time on time.monotonic_ns()'s clock.

    picamera2's timestamp (us) counts from the first frame's sensor timestamp,
    which libcamera takes on CLOCK_BOOTTIME; that runs ahead of
    CLOCK_MONOTONIC by the time spent suspended. Frames from the future (clock
    mix-ups) are clamped to now.
    """
    now_ns = time.monotonic_ns()
    if timestamp is None or first_timestamp is None:
        return now_ns
    boot_ahead_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - now_ns
    return min(now_ns, (first_timestamp + timestamp) * 1000 - boot_ahead_ns)


def _ring_output_class(output_base):
    """A picamera2 Output subclass (its base class exists only once picamera2
    is imported) that forwards each encoded frame to the source."""

    class RingOutput(output_base):
        def __init__(self, source: Picamera2Source, encoder):
            super().__init__()
            self._source = source
            self._encoder = encoder

        def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
            if audio:
                return
            self._source._on_frame(frame, keyframe, timestamp,
                                   getattr(self._encoder, "firsttimestamp", None))

    return RingOutput
