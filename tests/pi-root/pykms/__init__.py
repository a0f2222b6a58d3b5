"""Stand-in for pykms, kms++'s Python bindings (Raspberry Pi OS: python3-kms++).

kms++ is only in Raspberry Pi's own archive, which is not reachable here, and
PyPI's `kms` is an unrelated project. picamera2 imports pykms when it loads its
DRM preview (picamera2/previews/drm_preview.py, imported by `import picamera2`)
and reads `PixelFormat.<name>` and `PlaneType.<name>` there; nothing else runs
without a display. This module answers exactly that: any such attribute is its
own name. Opening a display (`Card()` and the rest) fails, as on a Pi without a
monitor.
"""


class _Names(type):
    def __getattr__(cls, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return name


class PixelFormat(metaclass=_Names):
    """pykms.PixelFormat.X is "X"."""


class PlaneType(metaclass=_Names):
    """pykms.PlaneType.X is "X"."""


class _NoDisplay:
    def __init__(self, *args, **kwargs):
        raise OSError("pykms stand-in (tests/pi-root/pykms): no DRM display here")


Card = ResourceManager = AtomicReq = DumbFramebuffer = DmabufFramebuffer = _NoDisplay
