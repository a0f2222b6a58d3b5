"""Stand-in for picamera2 (see ../README.md): the parts rpistream uses."""

from .picamera2 import Picamera2

__all__ = ["Picamera2"]
