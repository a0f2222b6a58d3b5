"""Sources of encoded video: a Pi camera, a test pattern, or a file, each on its own thread.

create_source() builds the source a camera config names. The config is
validated by rpistream.config, the one place each key's bounds are set, so
nothing here checks a value again; what is checked here is what only this
machine can tell (a camera, a file's contents). available_sources() says
which kinds can run here, for `rpistream check`, and choose_default_camera()
decides what a config without cameras gets.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import av

from rpistream.config import CameraConfig, Config, Picamera2Options
from rpistream.sources import camera_stack
from rpistream.sources.base import Source, SourceError

__all__ = ["Source", "SourceError", "available_sources", "choose_default_camera",
           "create_source", "picamera2_status"]


def create_source(camera: CameraConfig, ring) -> Source:
    """The source `camera` names, pushing into `ring`, not yet started."""
    if camera.source == "testpattern":
        from rpistream.sources.testpattern import TestPatternSource
        return TestPatternSource(ring, codec=camera.codec, width=camera.width,
                                 height=camera.height, fps=camera.fps, bitrate=camera.bitrate,
                                 keyframe_interval=camera.keyframe_interval)
    if camera.source == "file":
        from rpistream.sources.file import FileSource
        return FileSource(ring, path=camera.options.path, codec=camera.codec, fps=camera.fps,
                          loop=camera.options.loop)
    from rpistream.sources.picamera2 import Picamera2Source
    return Picamera2Source(ring, width=camera.width, height=camera.height, fps=camera.fps,
                           bitrate=camera.bitrate, keyframe_interval=camera.keyframe_interval,
                           camera_num=camera.options.camera_num, hflip=camera.options.hflip,
                           vflip=camera.options.vflip)


def choose_default_camera(config: Config) -> Config:
    """`config` with its placeholder camera, the one a config without
    [[camera]] tables gets, made the Pi camera where picamera2 finds one, else
    left a test pattern that carries the reason (the log, /api/cameras,
    /healthz and the viewer page show it). Other configs are returned as they are."""
    (camera, *others) = config.cameras
    if others or not camera.placeholder:
        return config
    status = picamera2_status()
    if status.startswith("ok"):
        camera = dataclasses.replace(camera, source="picamera2", options=Picamera2Options(),
                                     placeholder=False)
    else:
        camera = dataclasses.replace(camera, placeholder=False, fallback_reason=(
            "no camera is configured and " + status.removeprefix("unavailable: ")))
    return dataclasses.replace(config, cameras=(camera,))


def available_sources() -> dict[str, str]:
    """For each kind: "ok: ..." when it can run here, else "unavailable: why"."""
    return {"testpattern": _testpattern_status(), "file": _file_status(),
            "picamera2": picamera2_status()}


def _testpattern_status() -> str:
    missing = [name for name in ("libx264", "libvpx") if name not in av.codecs_available]
    if missing:
        return (f"unavailable: PyAV's FFmpeg lacks {' and '.join(missing)}: install a PyAV "
                f"built with them (the PyPI wheels are)")
    return "ok: PyAV has libx264 and libvpx"


def _file_status() -> str:
    if "h264" not in av.codecs_available:
        return "unavailable: PyAV's FFmpeg has no H.264 decoder to check .h264 files with"
    return "ok: replays .h264 (Annex-B H.264) and .ivf (VP8) files"


def picamera2_status() -> str:
    """"ok: ..." naming the cameras when picamera2 finds one, else
    "unavailable: " and why, in one line."""
    if importlib.util.find_spec("picamera2") is None:
        return f"unavailable: picamera2 is not installed: {camera_stack.INSTALL}"
    from rpistream.sources.picamera2 import import_picamera2, is_libav
    try:
        picamera2_class, h264_encoder, _, _ = import_picamera2()
    except ValueError as exc:
        return f"unavailable: {exc}"
    try:
        cameras = picamera2_class.global_camera_info()
    except Exception as exc:  # noqa: BLE001 - a report, whatever libcamera raises
        return f"unavailable: picamera2 cannot list cameras: {type(exc).__name__}: {exc}"
    if not cameras:
        return (f"unavailable: picamera2 {camera_stack.version('picamera2')} works, but finds "
                f"no camera (check the cable and camera_auto_detect=1 in "
                f"/boot/firmware/config.txt)")
    encoder = (f"software H.264 encoder ({h264_encoder.__name__})" if is_libav(h264_encoder)
               else "hardware H.264 encoder (V4L2)")
    models = ", ".join(f"{i}: {c.get('Model', '?')}" for i, c in enumerate(cameras))
    return f"ok: cameras {models}; {encoder}"
