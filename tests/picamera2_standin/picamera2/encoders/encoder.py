"""Encoder base class (picamera2/encoders/encoder.py): outputs, start/stop, timestamps."""

import os
import threading
from enum import Enum

from ..outputs import Output


class Quality(Enum):
    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    VERY_HIGH = 4


class Encoder:
    def __init__(self):
        self._width = 0
        self._height = 0
        self._stride = 0
        self._format = None
        self._output = []
        self._running = False
        self._name = None
        self._lock = threading.Lock()
        self.firsttimestamp = None
        self._output_lock = threading.Lock()

    @property
    def running(self):
        return self._running

    @property
    def size(self):
        return (self._width, self._height)

    @size.setter
    def size(self, value):
        self._width, self._height = value

    @property
    def format(self):
        return self._format

    @format.setter
    def format(self, value):
        self._format = value

    @property
    def output(self):
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value):
        if isinstance(value, Output):
            value = [value]
        elif not (isinstance(value, list) and all(isinstance(o, Output) for o in value)):
            raise RuntimeError("Must pass Output")
        self._output = value

    def encode(self, stream, request):
        with self._lock:
            self._encode(stream, request)

    def _encode(self, stream, request):
        raise NotImplementedError

    def start(self, quality=None):
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            self._setup(quality)
            self._running = True
            self.firsttimestamp = None
            for out in self._output:
                out.start()
            self._start()

    def stop(self):
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            self._stop()
            for out in self._output:
                out.stop()

    def _setup(self, quality):
        pass

    def _start(self):
        pass

    def _stop(self):
        pass

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
        # Stand-in: the frame faults of STANDIN_FAULTS.frames (../faults.py).
        from ..picamera2 import STANDIN_FAULTS
        fault = STANDIN_FAULTS.frames
        if fault == "none":
            return
        if fault == "garbage":  # no zero byte, so no start code
            frame = os.urandom(len(frame)).replace(b"\0", b"\xff")
        elif fault == "truncated":
            frame = frame[:STANDIN_FAULTS.truncate_to]
        with self._output_lock:
            for out in self._output:
                out.outputframe(frame, keyframe, timestamp, packet, audio)

    def _timestamp(self, request):
        # As picamera2: microseconds since the first frame's SensorTimestamp (ns).
        ts = int(request.metadata["SensorTimestamp"] / 1000)
        if self.firsttimestamp is None:
            self.firsttimestamp = ts
            return 0
        return ts - self.firsttimestamp
