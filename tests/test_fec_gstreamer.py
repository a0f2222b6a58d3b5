"""Our RED + ULPFEC decoded by GStreamer (rtpreddec, rtpstorage, rtpulpfecdec,
rtpvp8depay, vp8dec): an FEC implementation that shares no code with ours.

Real VP8 frames are packetized, grouped (ten media packets, across frame
boundaries), protected, RED-wrapped as one viewer sends them; one media packet
of every group is dropped. GStreamer must restore every dropped packet
(rtpulpfecdec's `recovered`, nothing `unrecovered`) and decode every frame,
pixel for pixel what PyAV decodes from the encoder's own output.

No header extensions here: GStreamer 1.22's rtpreddec rebuilds the unwrapped
packet from a fresh 12-byte header (gstrtpreddec.c gst_rtp_red_create_packet),
dropping the extension block that libwebrtc — and we — keep in RED's outer
header and protect with ULPFEC; with extensions its XOR could not add up.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import media
from conftest import load_twin

from rpistream.core import fec_format

SYSTEM_PYTHON = "/usr/bin/python3"
RECEIVER = Path(__file__).with_name("gst_ulpfec_receiver.py")


def gstreamer_with_gi() -> bool:
    if not Path(SYSTEM_PYTHON).exists() or shutil.which("gst-inspect-1.0") is None:
        return False
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); "
         "gi.require_version('GstApp', '1.0'); from gi.repository import Gst, GstApp; "
         "Gst.init(None); assert Gst.ElementFactory.find('rtpulpfecdec')"],
        capture_output=True, timeout=60)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not gstreamer_with_gi(),
                                reason="GStreamer with python3-gi and rtpulpfecdec is needed")

FRAMES, GOP = 30, 10
MEDIA_PT, RED_PT, ULPFEC_PT, SSRC = 96, 100, 101, 0x1234ABCD
MTU, GROUP = 500, 10


@pytest.fixture(scope="module", params=["c", "py"])
def impl(request):
    return load_twin("_fec", request.param), load_twin("_rtp", request.param)


@pytest.mark.parametrize("kind", ["interleaved", "block"])
def test_gstreamer_recovers_and_decodes_every_frame(impl, kind, tmp_path):
    fec, rtp = impl
    frames = media.encode("libvpx", FRAMES, GOP)
    packetizer = rtp.Vp8Packetizer(mtu=MTU)
    refs = []
    for frame in frames:
        batch = packetizer.packetize(frame.data, frame.timestamp, frame.keyframe)
        refs += [(batch, index) for index in range(len(batch))]

    out = bytearray()
    seq, lost_count = 65400, 0  # wraps during the stream
    for group_number, start in enumerate(range(0, len(refs), GROUP)):
        group = refs[start:start + GROUP]
        payloads = fec.encode("ulpfec", [batch.packet(i) for batch, i in group],
                              fec_format.masks(len(group), fec_format.fec_count(len(group)), kind))
        lost = group_number % len(group)  # a different position in each group
        for offset, (batch, index) in enumerate(group):
            packet = batch.write_red(index, RED_PT, MEDIA_PT, SSRC, (seq + offset) & 0xFFFF)
            kind_byte = b"L" if offset == lost else b"M"
            lost_count += offset == lost
            out += struct.pack("!cH", kind_byte, len(packet)) + packet
        # libwebrtc's RED/ULPFEC packets: the last media packet's timestamp, no marker.
        for j, payload in enumerate(payloads):
            header = fec_format.rtp_header(RED_PT, (seq + len(group) + j) & 0xFFFF,
                                    group[-1][0].timestamp, SSRC)
            packet = payload.write_packet(header, seq, SSRC, MEDIA_PT, b"",
                                          red_block_type=ULPFEC_PT)
            out += struct.pack("!cH", b"F", len(packet)) + packet
        seq = (seq + len(group) + len(payloads)) & 0xFFFF

    records, decoded = tmp_path / "records.bin", tmp_path / "out.yuv"
    records.write_bytes(bytes(out))
    result = subprocess.run(
        [SYSTEM_PYTHON, str(RECEIVER), str(records), str(decoded), str(RED_PT), str(ULPFEC_PT),
         str(MEDIA_PT), str(SSRC)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    counters = json.loads(result.stdout.strip().splitlines()[-1])
    assert counters["recovered"] == lost_count > 0
    assert counters["unrecovered"] == 0
    assert counters["frames"] == FRAMES
    assert decoded.read_bytes() == media.decode("vp8", frames), "every frame, pixel for pixel"
