"""rpistream: low-latency WebRTC camera server for the Raspberry Pi."""

__version__ = "0.1.0"
