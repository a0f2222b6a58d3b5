"""Sources of encoded video: a Pi camera, a test pattern, or a file, each on its own thread.

create_source() builds one from configuration values (ValueError naming the
option, the value and what is allowed when one is wrong); available_sources()
says which kinds can run on this machine, for `rpistream check`.
"""

from __future__ import annotations

import importlib
import importlib.util
import numbers

import av

from rpistream.sources import camera_stack
from rpistream.sources.base import CODECS, Source, SourceError

__all__ = ["KINDS", "Source", "SourceError", "available_sources", "create_source",
           "picamera2_status"]

KINDS = ("testpattern", "file", "picamera2")
# Options each kind accepts beyond the common parameters, and their defaults
# (None: required). The same names as rpistream/config.py's [camera.options].
OPTIONS = {
    "testpattern": {},
    "file": {"path": None, "loop": True},
    "picamera2": {"camera_num": 0, "hflip": False, "vflip": False},
}
# Bounds of the common parameters, and why:
WIDTH_HEIGHT = (16, 4096)  # H.264 level 5.2 and VP8 both stop at 4096 px a side
FPS = (1, 120)  # the Pi camera's fastest modes; beyond, 90 kHz pts get coarse
BITRATE = (50_000, 50_000_000)  # a legible 160x120 to beyond the Pi encoder's 25 Mbit/s
KEYFRAME_INTERVAL = (0.1, 600)  # seconds; viewers ask for keyframes when they need them


def create_source(kind: str, ring, *, codec: str, width: int, height: int, fps: float,
                  bitrate: int, keyframe_interval: float, options: dict) -> Source:
    """A source of `kind` pushing into `ring`, not yet started."""
    if kind not in KINDS:
        raise ValueError(f"source kind {kind!r} is not known: use one of {', '.join(KINDS)}")
    if codec not in CODECS:
        raise ValueError(f"codec {codec!r} is not supported: use one of {', '.join(CODECS)}")
    for name, value in (("width", width), ("height", height)):
        _check_int(name, value, *WIDTH_HEIGHT)
        if value % 2:
            raise ValueError(f"{name} {value} must be even (YUV 4:2:0 halves it for chroma)")
    _check_number("fps", fps, *FPS)
    _check_int("bitrate", bitrate, *BITRATE)
    _check_number("keyframe_interval", keyframe_interval, *KEYFRAME_INTERVAL)
    opts = _options(kind, options)
    if kind == "testpattern":
        from rpistream.sources.testpattern import TestPatternSource
        return TestPatternSource(ring, codec=codec, width=width, height=height, fps=fps,
                                 bitrate=bitrate, keyframe_interval=keyframe_interval)
    if kind == "file":
        from rpistream.sources.file import FileSource
        if not isinstance(opts["path"], str) or not opts["path"]:
            raise ValueError(f"file source option path={opts['path']!r} must be the path "
                             f"of an .h264 or .ivf file")
        _check_bool("file", "loop", opts["loop"])
        return FileSource(ring, path=opts["path"], codec=codec, fps=fps, loop=opts["loop"])
    from rpistream.sources.picamera2 import Picamera2Source
    # libcamera numbers cameras from 0; 15 is far above any board's connectors.
    _check_int("picamera2 source option camera_num", opts["camera_num"], 0, 15)
    _check_bool("picamera2", "hflip", opts["hflip"])
    _check_bool("picamera2", "vflip", opts["vflip"])
    return Picamera2Source(ring, codec=codec, width=width, height=height, fps=fps,
                           bitrate=bitrate, keyframe_interval=keyframe_interval,
                           camera_num=opts["camera_num"], hflip=opts["hflip"],
                           vflip=opts["vflip"])


def available_sources() -> dict[str, str]:
    """For each kind: "ok: ..." when it can run here, else "unavailable: why"."""
    return {"testpattern": _testpattern_status(), "file": _file_status(),
            "picamera2": picamera2_status()}


def _options(kind: str, options: dict) -> dict:
    allowed = OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        allowed_text = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"{kind} source option {unknown[0]}={options[unknown[0]]!r} is not "
                         f"known: options for {kind} are {allowed_text}")
    merged = {**allowed, **options}
    missing = [name for name, value in merged.items() if value is None]
    if missing:
        raise ValueError(f"{kind} source needs option {missing[0]}")
    return merged


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not low <= value <= high:
        raise ValueError(f"{name} {value!r} is not allowed: use a whole number from "
                         f"{low} to {high}")


def _check_bool(kind: str, name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{kind} source option {name}={value!r} is not allowed: use true "
                         f"or false")


def _check_number(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not low <= value <= high:
        raise ValueError(f"{name} {value!r} is not allowed: use a number from {low} to {high}")


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
