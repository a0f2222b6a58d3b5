"""Packetized real video decoded by GStreamer (rtpvp8depay / rtph264depay + FFmpeg and
libvpx decoders): an RTP implementation that shares no code with ours. Every frame
must come out, pixel for pixel what PyAV decodes from the encoder's own output."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

import media
from conftest import load_twin

GST_LAUNCH = shutil.which("gst-launch-1.0")
pytestmark = pytest.mark.skipif(GST_LAUNCH is None, reason="gst-launch-1.0 is not installed")

FRAMES, GOP = 30, 10
PAYLOAD_TYPE, SSRC = 96, 0x1234ABCD
# Small enough that a keyframe needs FU-A / many VP8 packets, and with extension room.
MTU, EXT_ROOM = 500, 8
MID = bytes([0x10]) + b"0"  # RFC 8285 §4.2 element: id 1, 1 byte

# No h264parse (plugins-bad) needed: avdec_h264 takes rtph264depay's
# byte-stream access units directly.
CODECS = {
    "vp8": ("libvpx", "Vp8Packetizer", "encoding-name=VP8", "rtpvp8depay ! vp8dec"),
    "h264": ("libx264", "H264Packetizer", "encoding-name=H264,packetization-mode=(string)1",
             "rtph264depay ! avdec_h264"),
}


@pytest.fixture(scope="module", params=["c", "py"])
def rtp(request):
    return load_twin("_rtp", request.param)


def rtp_stream(packetizer, frames) -> bytes:
    """Every packet as one viewer gets it, framed per RFC 4571 §2 (16-bit length)."""
    out = bytearray()
    seq = 65500  # wraps during the stream
    for frame in frames:
        batch = packetizer.packetize(frame.data, frame.timestamp, frame.keyframe)
        for index in range(len(batch)):
            packet = batch.write(index, PAYLOAD_TYPE, SSRC, seq, MID)
            out += struct.pack("!H", len(packet)) + packet
            seq = (seq + 1) & 0xFFFF
    return bytes(out)


@pytest.mark.parametrize("codec", CODECS)
def test_gstreamer_decodes_every_frame(rtp, codec, tmp_path):
    encoder, packetizer_name, caps, decoder = CODECS[codec]
    frames = media.encode(encoder, FRAMES, GOP)
    stream, decoded = tmp_path / "stream.rtp", tmp_path / "out.yuv"
    stream.write_bytes(rtp_stream(getattr(rtp, packetizer_name)(mtu=MTU, ext_room=EXT_ROOM),
                                  frames))
    pipeline = (f"filesrc location={stream} ! application/x-rtp-stream,media=video,"
                f"clock-rate=90000,payload={PAYLOAD_TYPE},{caps} ! rtpstreamdepay ! "
                f"{decoder} ! video/x-raw,format=I420 ! filesink location={decoded}")
    result = subprocess.run([GST_LAUNCH, "-q", *pipeline.split()], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    frame_size = media.WIDTH * media.HEIGHT * 3 // 2
    assert decoded.stat().st_size == FRAMES * frame_size, "every frame decoded"
    # Same decoders underneath (libvpx VP8 is bit-exact with FFmpeg's; avdec_h264 is
    # FFmpeg's), so the pixels must be identical.
    expected = media.decode({"vp8": "vp8", "h264": "h264"}[codec], frames)
    assert decoded.read_bytes() == expected
