"""FrameRing: the compiled ring, or its pure-Python twin with RPISTREAM_NO_EXTENSIONS=1."""

from rpistream.core.native import NATIVE

if NATIVE:
    from rpistream.core._ring import Frame, FrameRing
else:
    from rpistream.core._ring_py import Frame, FrameRing

__all__ = ["Frame", "FrameRing"]
