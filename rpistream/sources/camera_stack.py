"""The system's camera stack as rpistream's Python sees it, and why it fails to import.

On Raspberry Pi OS, picamera2, libcamera's bindings and simplejpeg come with
the system (python3-picamera2), compiled against the system's numpy. A numpy
of another major version first on the path, e.g. from a virtualenv, makes
simplejpeg's import fail with "numpy.dtype size changed, may indicate binary
incompatibility" (picamera2 issues #1088, #1211). rpistream's Debian package
uses the system's numpy for that reason (debian/camera_stack.py); this module
turns such a failure, wherever it comes from, into one line that names the
module, the cause and what to do.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

# What picamera2 stands on, in the order it imports them.
MODULES = ("numpy", "av", "simplejpeg", "libcamera", "picamera2")
INSTALL = ("install python3-picamera2 from Raspberry Pi OS (sudo apt install "
           "python3-picamera2); a virtualenv needs --system-site-packages to see it")
# What numpy's C API check says when an extension meets a numpy it was not
# built for: 1.x's dtype size check, and 2.x's refusal of 1.x builds.
NUMPY_ABI_MESSAGES = ("numpy.dtype size changed", "compiled using NumPy 1.x",
                      "numpy.core.multiarray failed to import", "_ARRAY_API not found")


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # e.g. libcamera's bindings
        return "(version unknown)"


def where(module: str) -> str | None:
    """'numpy 1.24.2 in /usr/lib/python3/dist-packages', or None if not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return None
    # numpy/__init__.py -> the directory holding the package
    directory = os.path.dirname(os.path.dirname(spec.origin)) if spec.submodule_search_locations \
        else os.path.dirname(spec.origin)
    return f"{module} {version(module)} in {directory}"


def failed_module(exc: BaseException) -> str | None:
    """The module whose import raised `exc`: the innermost module body on its
    traceback, or the missing module of a ModuleNotFoundError."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return exc.name
    module = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "<module>":
            module = tb.tb_frame.f_globals.get("__name__", module)
        tb = tb.tb_next
    return module


def explain(exc: BaseException, wanted: str = "picamera2") -> str:
    """One line: what failed to import while importing `wanted`, why, and what to do."""
    module = failed_module(exc) or wanted
    cause = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError):
        return f"{wanted} cannot be imported: {module} is not installed: {INSTALL}"
    if any(message in str(exc) for message in NUMPY_ABI_MESSAGES):
        numpy = where("numpy") or "numpy"
        return (f"{wanted} cannot be imported: {module} failed: {cause} — {module} was built "
                f"against another numpy than {numpy}, which comes first on this Python's "
                f"path: use the system's numpy (python3-numpy; rpistream's Debian package "
                f"does), and remove the other numpy from rpistream's environment")
    return f"{wanted} cannot be imported: {module} failed: {cause} — {INSTALL}"
