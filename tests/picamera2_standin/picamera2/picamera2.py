"""Picamera2, standing in for a Raspberry Pi camera (picamera2/picamera2.py).

The "sensor" is a thread that films a moving scene carrying the block code
(frame number, capture time) at the configured FrameRate, mirrored as the
configuration's libcamera Transform says, and passes it with a CLOCK_BOOTTIME
SensorTimestamp, as libcamera gives, to the running encoders.

STANDIN_FAULTS (faults.py) makes it fail as real cameras do: busy opens, frames
stalled, garbage or truncated, a stop that hangs.
"""

import itertools
import threading
import time

import numpy as np

from rpistream.sources import blockcode

from .faults import Faults

# The cameras libcamera would list (stand-in knob for tests).
STANDIN_CAMERAS = [{"Model": "imx219", "Location": 2, "Rotation": 180,
                    "Id": "/base/soc/i2c0mux/i2c@1/imx219@10"}]
# Faults to inject (stand-in knob for tests; see faults.py).
STANDIN_FAULTS = Faults()
_open_cameras = set()
_open_lock = threading.Lock()


class _Request:
    """What an encoder gets from a completed request: the picture, and metadata."""

    def __init__(self, array, sensor_timestamp_ns):
        self.array = array
        self.metadata = {"SensorTimestamp": sensor_timestamp_ns}


class Picamera2:
    @staticmethod
    def global_camera_info():
        return [dict(camera, Num=i) for i, camera in enumerate(STANDIN_CAMERAS)]

    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None):
        self.is_open = False
        # As picamera2: an IndexError for a camera that is not there.
        camera_num = self.global_camera_info()[camera_num]["Num"]
        with _open_lock:
            # libcamera cannot acquire a camera another process holds.
            if camera_num in _open_cameras or STANDIN_FAULTS._busy_open():
                raise RuntimeError("Camera __init__ sequence did not complete.")
            _open_cameras.add(camera_num)
        STANDIN_FAULTS._opened()
        self.camera_idx = camera_num
        self.is_open = True
        self.camera_config = None
        self.started = False
        self._encoders = set()
        self._sensor = None
        self._sensor_stop = threading.Event()

    def create_video_configuration(self, main={}, lores=None, raw={}, transform=None,
                                   colour_space=None, buffer_count=6, controls={},
                                   display="main", encode="main", queue=True, sensor={},
                                   use_case="video"):
        return {"use_case": use_case, "buffer_count": buffer_count, "queue": queue,
                "main": {"format": "XBGR8888", "size": (1280, 720), **main},
                "lores": lores, "raw": raw, "transform": transform,
                "colour_space": colour_space, "display": display, "encode": encode,
                "sensor": sensor,
                "controls": {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333),
                             **controls}}

    def configure(self, camera_config=None):
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        width, height = camera_config["main"]["size"]
        if width % 2 or height % 2:
            raise RuntimeError(f"Invalid size {width}x{height}")
        if camera_config["main"]["format"] != "YUV420":
            # The stand-in only makes YUV420, the format rpistream asks for.
            raise RuntimeError("Stand-in supports main format YUV420 only")
        self.camera_config = camera_config

    def camera_configuration(self):
        return self.camera_config

    def start_encoder(self, encoder=None, output=None, pts=None, quality=None, name=None):
        if output is not None:
            encoder.output = output
        name = name or self.camera_config["encode"]
        stream = self.camera_config[name]
        encoder.size = stream["size"]
        encoder.format = stream["format"]
        if getattr(encoder, "framerate", None) is None:
            encoder.framerate = self._frame_rate()
        encoder.start(quality=quality)
        self._encoders.add(encoder)

    def stop_encoder(self, encoders=None):
        for encoder in list(self._encoders if encoders is None else [encoders]):
            encoder.stop()
            self._encoders.discard(encoder)

    def start_recording(self, encoder, output, pts=None, config=None, quality=None, name=None):
        if self.camera_config is None and config is None:
            config = self.create_video_configuration()
        if config is not None:
            self.configure(config)
        self.start_encoder(encoder, output, pts=pts, quality=quality, name=name)
        self.start()

    def stop_recording(self):
        self.stop()
        self.stop_encoder()

    def start(self, config=None, show_preview=False):
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        self._sensor_stop.clear()
        self._sensor = threading.Thread(target=self._sensor_loop, daemon=True)
        self._sensor.start()
        self.started = True

    def stop(self):
        if not self.started:
            return
        self._sensor_stop.set()
        self._sensor.join()
        STANDIN_FAULTS._stop()  # blocks here while hang_stop is set
        self.started = False

    def close(self):
        if not self.is_open:
            return
        self.stop_recording()
        with _open_lock:
            _open_cameras.discard(self.camera_idx)
        self.is_open = False

    def _frame_rate(self):
        controls = self.camera_config["controls"]
        if "FrameRate" in controls:
            return controls["FrameRate"]
        return 1_000_000 / controls["FrameDurationLimits"][0]

    def _sensor_loop(self):
        width, height = self.camera_config["main"]["size"]
        transform = self.camera_config["transform"]
        period_ns = 1e9 / self._frame_rate()
        start_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        ramp = (np.arange(width, dtype=np.uint32) * 200 // width + 16).astype(np.uint8)
        for sequence in itertools.count():
            due_ns = start_ns + round(sequence * period_ns)
            delay_ns = due_ns - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            if self._sensor_stop.wait(max(0.0, delay_ns / 1e9)):
                return
            picture = np.empty((height * 3 // 2, width), dtype=np.uint8)
            y = picture[:height]
            y[:] = np.roll(ramp, sequence * 4)
            chroma = picture[height:].reshape(2, height // 2, width // 2)
            chroma[:] = 128
            blockcode.draw(y, chroma[0], chroma[1], sequence, time.time_ns() // 1_000_000)
            if transform is not None and transform.hflip:
                y[:] = y[:, ::-1]
            if transform is not None and transform.vflip:
                y[:] = y[::-1]
            request = _Request(picture, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
            for encoder in list(self._encoders):
                encoder.encode(self.camera_config["encode"], request)
