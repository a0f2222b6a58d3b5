"""Real encoded video for tests: deterministic frames encoded with PyAV.

The picture is a random texture sliding diagonally, so keyframes are large
(tens of KB: they need FU-A / many VP8 packets at small MTUs) and delta frames
carry real motion. Same seed, same encoder settings, single thread: the same
bytes on every run.
"""

from __future__ import annotations

import fractions
import functools
import random
from dataclasses import dataclass

import av

WIDTH = 640
HEIGHT = 480
FPS = 30
CLOCK_RATE = 90_000  # RFC 6184 §8.2.1 / RFC 7741 §6.1: video RTP clock
_STEP = 4  # texture pixels moved per frame


@dataclass(frozen=True)
class EncodedFrame:
    data: bytes
    keyframe: bool
    timestamp: int  # RTP 90 kHz


def _texture(width: int, height: int, frames: int, seed: int) -> list[bytes]:
    """Rows of a random texture wide and tall enough to slide across `frames`."""
    rng = random.Random(seed)
    margin = _STEP * frames
    return [rng.randbytes(width + margin) for _ in range(height + margin)]


def _picture(texture: list[bytes], index: int, width: int, height: int) -> av.VideoFrame:
    shift = _STEP * index
    frame = av.VideoFrame(width, height, "yuv420p")
    luma = b"".join(row[shift:shift + width] for row in texture[shift:shift + height])
    frame.planes[0].update(luma)
    chroma_size = (width // 2) * (height // 2)
    frame.planes[1].update(bytes((index * 7 + i // width) & 0xFF for i in range(chroma_size)))
    frame.planes[2].update(bytes([128]) * chroma_size)
    return frame


def _context(codec: str, width: int, height: int, gop: int, slices: int) -> av.CodecContext:
    context = av.CodecContext.create(codec, "w")
    context.width = width
    context.height = height
    context.pix_fmt = "yuv420p"
    context.time_base = fractions.Fraction(1, FPS)
    context.framerate = fractions.Fraction(FPS, 1)
    context.gop_size = gop
    context.thread_count = 1
    context.bit_rate = 4_000_000
    if codec == "libvpx":
        context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    else:
        context.options = {"preset": "ultrafast", "tune": "zerolatency", "bframes": "0",
                           "slices": str(slices)}
    return context


@functools.cache
def encode(codec: str, frames: int = 10, gop: int = 10, width: int = WIDTH,
           height: int = HEIGHT, seed: int = 1, slices: int = 1) -> tuple[EncodedFrame, ...]:
    """`frames` frames encoded with libvpx (VP8) or libx264 (Annex-B H.264, one NAL
    per slice), a keyframe every `gop`. Cached: each configuration is encoded once."""
    context = _context(codec, width, height, gop, slices)
    texture = _texture(width, height, frames, seed)
    packets = []
    for index in range(frames):
        picture = _picture(texture, index, width, height)
        picture.pts = index
        packets += context.encode(picture)
    packets += context.encode(None)
    assert len(packets) == frames, f"{codec} gave {len(packets)} packets for {frames} frames"
    return tuple(EncodedFrame(bytes(packet), packet.is_keyframe,
                              packet.pts * CLOCK_RATE // FPS) for packet in packets)


def decode(codec: str, frames: tuple[EncodedFrame, ...] | list[bytes]) -> bytes:
    """Raw I420 of every frame, as FFmpeg decodes `frames` (vp8 / h264)."""
    context = av.CodecContext.create(codec, "r")
    context.thread_count = 1
    out = bytearray()
    for frame in frames:
        data = frame.data if isinstance(frame, EncodedFrame) else frame
        for picture in context.decode(av.Packet(data)):
            out += _i420(picture)
    for picture in context.decode(None):
        out += _i420(picture)
    return bytes(out)


def _i420(picture: av.VideoFrame) -> bytes:
    """Planes without row padding, the way GStreamer's filesink writes I420."""
    out = bytearray()
    for plane in picture.planes:
        data = memoryview(plane)
        for row in range(plane.height):
            out += data[row * plane.line_size:row * plane.line_size + plane.width]
    return bytes(out)
