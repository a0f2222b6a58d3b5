"""FrameRing: the compiled ring, or its pure-Python twin with RPISTREAM_NO_EXTENSIONS=1."""

from rpistream._select import implementation

_impl = implementation("_ring")
FrameRing = _impl.FrameRing
Frame = _impl.Frame

__all__ = ["FrameRing", "Frame"]
