"""Stand-in for libcamera's Python bindings on bookworm (Raspberry Pi OS:
python3-libcamera from Raspberry Pi's archive; Debian 12 has no bindings).

The smallest module with which the real picamera2 imports and reports no
camera: `CameraManager.singleton().cameras` is empty, so
`Picamera2.global_camera_info()` returns [] and `Picamera2()` fails with
picamera2's own "Camera __ out of range" error, as on a Pi with no camera
attached. Transform, ColorSpace, Size and Rectangle hold their values as the
bindings' do (picamera2 compares them, keys dicts with them and reads their
fields); every other name picamera2 reads (Orientation.Rotate0,
controls.draft.NoiseReductionModeEnum.Fast, ...) is an inert placeholder.
Nothing here captures or configures anything. Trixie's root uses Debian's real
python3-libcamera instead.
"""

import os


class _Placeholder(type):
    """A class whose unknown attributes are further placeholders, and whose
    instances (made with any arguments) are inert."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        child = _Placeholder(name, (_Inert,), {})
        setattr(cls, name, child)
        return child


class _Inert(metaclass=_Placeholder):
    def __init__(self, *args, **kwargs):
        pass


class _Module(_Inert):
    """Namespaces such as libcamera.controls and libcamera.properties."""


class _Value:
    _fields: tuple = ()

    def __init__(self, *args, **kwargs):
        values = dict(zip(self._fields, args), **kwargs)
        for name in self._fields:
            setattr(self, name, values.get(name, 0))

    def _key(self):
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other):
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self):
        return hash((type(self).__name__, self._key()))

    def __repr__(self):
        return f"<libcamera.{type(self).__name__} {self._key()}>"


class Transform(_Value):
    _fields = ("rotation", "hflip", "vflip", "transpose")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hflip, self.vflip, self.transpose = (bool(self.hflip), bool(self.vflip),
                                                  bool(self.transpose))


class Size(_Value):
    _fields = ("width", "height")


class Rectangle(_Value):
    _fields = ("x", "y", "width", "height")


class ColorSpace(_Value):
    _fields = ("name",)

    @staticmethod
    def Sycc():
        return ColorSpace("Sycc")

    @staticmethod
    def Smpte170m():
        return ColorSpace("Smpte170m")

    @staticmethod
    def Rec709():
        return ColorSpace("Rec709")

    @staticmethod
    def Raw():
        return ColorSpace("Raw")


class _CameraManager:
    """libcamera has no camera: no sensor, no pipeline handler."""

    def __init__(self):
        self.cameras = []
        self.event_fd = os.eventfd(0) if hasattr(os, "eventfd") else os.pipe()[0]
        self.version = "stand-in"

    def get_ready_requests(self):
        return []


class CameraManager:
    _instance = None

    @staticmethod
    def singleton():
        if CameraManager._instance is None:
            CameraManager._instance = _CameraManager()
        return CameraManager._instance


def __getattr__(name):
    # libcamera.Transform, libcamera.ColorSpace, libcamera.StreamRole, ...
    if name.startswith("__"):
        raise AttributeError(name)
    placeholder = _Placeholder(name, (_Inert,), {})
    globals()[name] = placeholder
    return placeholder


controls = _Placeholder("controls", (_Module,), {})
properties = _Placeholder("properties", (_Module,), {})
_libcamera = _Placeholder("_libcamera", (_Module,), {})
