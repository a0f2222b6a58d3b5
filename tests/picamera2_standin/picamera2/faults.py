"""Faults: knobs that make the stand-in camera fail the ways real Pi cameras do.

Not part of picamera2's API: the stand-in's own, for tests. One instance,
`picamera2.picamera2.STANDIN_FAULTS`, is read by Picamera2 and the encoders
each time they use it; its attributes may be set from a test's thread while
the camera runs.
"""

import threading

# What Encoder.outputframe hands to the outputs (see Faults.frames).
FRAME_FAULTS = ("ok", "none", "garbage", "truncated")


class Faults:
    """Attributes:

    - busy_opens: the next N Picamera2(camera_num) raise RuntimeError("Camera
      __init__ sequence did not complete."), as picamera2 does when libcamera
      cannot acquire the camera (another process has it, or a previous
      owner's release has not finished); each raise it causes takes one off.
    - frames: what the encoder hands to outputs. "ok": the access units.
      "none": nothing, while the sensor and encoder threads run on (a stalled
      libcamera request queue or encoder). "garbage": random bytes the size
      of each access unit, no Annex-B start code in them (a corrupt capture
      buffer). "truncated": each access unit cut to `truncate_to` bytes (12:
      inside the SPS, before any slice), as an encoder failing mid-buffer
      hands over. Back to "ok", frames resume as the encoder makes them.
    - truncate_to: the length "truncated" cuts to.
    - hang_stop: while true, Picamera2.stop() of a running camera (as
      stop_recording() calls it) stops the sensor and then blocks, the camera
      still open, until release_hang(): a libcamera stop waiting for requests
      that never complete. Once released the stop completes as usual.
    - opens: successful Picamera2() constructions; stop_calls: stop()s of a
      running camera (hung ones included). For tests to see restarts.
    """

    def __init__(self):
        self.busy_opens = 0
        self.frames = "ok"
        self.truncate_to = 12
        self.hang_stop = False
        self.opens = 0
        self.stop_calls = 0
        self._lock = threading.Lock()
        self._released = threading.Event()

    @property
    def frames(self):
        return self._frames

    @frames.setter
    def frames(self, value):
        if value not in FRAME_FAULTS:
            raise ValueError(f"frames must be one of {FRAME_FAULTS}, not {value!r}")
        self._frames = value

    def release_hang(self):
        """Turn hang_stop off and let every stop() hung so far complete. Later
        hangs (hang_stop set again) wait on a fresh event."""
        with self._lock:
            self.hang_stop = False
            self._released.set()
            self._released = threading.Event()

    # Called by the stand-in itself.

    def _busy_open(self):
        """True if this open is to fail as busy (and count it off)."""
        with self._lock:
            if self.busy_opens > 0:
                self.busy_opens -= 1
                return True
            return False

    def _opened(self):
        with self._lock:
            self.opens += 1

    def _stop(self):
        """Count a stop of a running camera; block while hang_stop is set."""
        with self._lock:
            self.stop_calls += 1
            released = self._released if self.hang_stop else None
        if released is not None:
            released.wait()
