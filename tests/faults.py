"""Breaking a running camera on purpose: a fault hook for the test pattern and file sources.

The picamera2 stand-in has the same faults built in (tests/picamera2_standin/
picamera2/faults.py); sources that rpistream encodes or reads itself get them
through `Source.fault_hook`, which sees every frame before its check and the ring.
"""

from __future__ import annotations

import os

import rpistream.stream.camera as camera_module

FRAME_FAULTS = ("ok", "none", "garbage", "truncated")


class FrameFault:
    """A Source.fault_hook, switchable while the camera runs. `mode` as the
    stand-in's `frames`: "ok" passes frames on; "none" delivers nothing while
    the source's thread runs on (a stall); "garbage" hands over random bytes
    of each frame's size, none of them zero (no start code can form);
    "truncated" cuts each frame to `truncate_to` bytes (inside H.264's SPS,
    inside VP8's key frame header)."""

    def __init__(self):
        self.mode = "ok"
        self.truncate_to = 12

    def __call__(self, data, keyframe):
        mode = self.mode
        if mode == "ok":
            return data, keyframe
        if mode == "none":
            return None
        if mode == "garbage":
            size = memoryview(data).nbytes
            return bytes(b % 255 + 1 for b in os.urandom(size)), keyframe
        assert mode == "truncated", mode
        return bytes(memoryview(data).cast("B")[:self.truncate_to]), keyframe


def attach(monkeypatch, camera, fault: FrameFault) -> None:
    """`fault` on `camera`'s current source and on every source it makes later
    (a restart makes a new one), and on no other camera's."""
    make = camera_module.create_source

    def create_source(config, ring):
        source = make(config, ring)
        if config.name == camera.name:
            source.fault_hook = fault
        return source

    monkeypatch.setattr(camera_module, "create_source", create_source)
    camera.source.fault_hook = fault
