"""GStreamer programs in tests: Debian's /usr/bin/python3 runs them (it has
PyGObject and GStreamer's typelibs; the test virtualenv has no `gi`), and
they write each decoded frame's luma plane to a file whose block codes are
read here with rpistream's own reader."""

from __future__ import annotations

import functools
import os
import struct
import subprocess
from pathlib import Path

import numpy as np

from rpistream.sources import blockcode

SYSTEM_PYTHON = "/usr/bin/python3"

PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstWebRTC, GstSdp
Gst.init(None)
missing = [name for name in ("webrtcbin", "nicesrc", "nicesink")
           if Gst.ElementFactory.find(name) is None]
print(" ".join(missing))
"""


@functools.cache
def unavailable() -> str | None:
    """Why GStreamer WebRTC programs cannot run here, or None when they can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing"
    result = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True,
                            timeout=30)
    if result.returncode != 0:
        return (f"{SYSTEM_PYTHON} has no PyGObject/GStreamer WebRTC typelibs (install "
                f"python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 "
                f"gir1.2-gst-plugins-bad-1.0): {result.stderr.strip().splitlines()[-1:]}")
    if result.stdout.strip():
        return (f"GStreamer lacks {result.stdout.strip()} (install gstreamer1.0-plugins-bad "
                f"gstreamer1.0-nice)")
    return None


def decoded_codes(out: Path) -> list[tuple[int, int] | None]:
    """The block code of every frame in a file of luma planes, in order."""
    data, codes, offset = out.read_bytes(), [], 0
    while offset + 4 <= len(data):
        width, height = struct.unpack_from("<HH", data, offset)
        offset += 4
        if offset + width * height > len(data):
            break  # a record still being written: the file is read while its writer runs
        plane = np.frombuffer(data, np.uint8, width * height, offset).reshape(height, width)
        offset += width * height
        codes.append(blockcode.read(plane))
    return codes
