"""A camera's packets leave room for what its viewers can negotiate, and no more."""

import asyncio

import pytest

from rpistream.config import CameraConfig
from rpistream.core.rtp import (FLEXFEC_HEADROOM, RED_HEADROOM, RTX_HEADROOM, ULPFEC_HEADROOM,
                           ext_block_size, headroom)
from rpistream.stream.camera import EXT_ROOM, MTU, Camera, fec_schemes
from rpistream.webrtc.session import choose_fec


@pytest.mark.parametrize("codec, setting, schemes", [
    ("h264", "auto", ("flexfec-03",)),  # ULPFEC's gaps would stall H.264
    ("vp8", "auto", ("ulpfec", "flexfec-03")),
    ("h264", "ulpfec", ("ulpfec",)),
    ("vp8", "flexfec", ("flexfec-03",)),
    ("h264", "off", ()),
    ("vp8", "off", ()),
])
def test_fec_schemes(codec, setting, schemes):
    assert fec_schemes(codec, setting) == schemes


@pytest.mark.parametrize("keys, room", [
    ({"rtx": False, "ulpfec": False, "flexfec": False}, 0),
    ({"rtx": True, "ulpfec": False, "flexfec": False}, RTX_HEADROOM),
    # An FEC packet carries its own extension block beside the one it protects.
    ({"rtx": True, "ulpfec": True, "flexfec": False}, RED_HEADROOM + ULPFEC_HEADROOM + 16),
    ({"rtx": False, "ulpfec": False, "flexfec": True}, FLEXFEC_HEADROOM + 16),
    ({"rtx": True, "ulpfec": True, "flexfec": True}, FLEXFEC_HEADROOM + 16),
])
def test_headroom(keys, room):
    assert ext_block_size(EXT_ROOM) == 16  # RFC 8285 §4.2: 4 + 12 bytes of elements
    assert headroom(EXT_ROOM, **keys) == room


def test_fec_off_fills_packets_to_the_mtu():
    """With FEC off only RTX's 2 bytes stay free: a big frame takes fewer packets
    (with room kept for FEC anyway, 50 bytes of every 1200 went unused)."""
    def packetizer(**keys):
        camera = Camera(CameraConfig(name="cam0", source="testpattern", codec="h264", **keys),
                        keyframe_min_interval=0.5)
        try:
            return camera.packetizer
        finally:
            asyncio.run(camera.stop())  # never started: frees its ring

    header = 12 + 4 + EXT_ROOM  # RFC 3550 §5.1 + RFC 8285 §4.2 block
    assert packetizer(fec="off").max_payload == MTU - header - RTX_HEADROOM
    assert packetizer(fec="off", retransmit=False).max_payload == MTU - header
    assert packetizer(fec="auto").max_payload == MTU - header - FLEXFEC_HEADROOM - 16


class Offer:
    """An offer's video section as parse_offer gives it: its codecs' mime types."""

    def __init__(self, *mime_types):
        self.rtp = type("Rtp", (), {"codecs": [type("Codec", (), {"mimeType": m})()
                                               for m in mime_types]})()


@pytest.mark.parametrize("offered, schemes, chosen", [
    (("video/VP8", "video/red", "video/ulpfec", "video/flexfec-03"), ("ulpfec", "flexfec-03"),
     "ulpfec"),
    (("video/VP8", "video/ulpfec", "video/flexfec-03"), ("ulpfec", "flexfec-03"),
     "flexfec-03"),  # ULPFEC needs RED to travel in (RFC 5109 §14.2)
    (("video/VP8", "video/red", "video/ulpfec"), ("flexfec-03",), None),  # Firefox
    (("video/H264", "video/flexfec-03"), (), None),  # fec = "off"
])
def test_each_session_takes_the_first_scheme_its_offer_has(offered, schemes, chosen):
    assert choose_fec(Offer(*offered), schemes) == chosen
