"""RTP packetizers (rpistream.core.rtp), checked against aiortc's independent depayloaders
and RTP parser. Every test runs against the compiled module (`c`) and its
pure-Python twin (`py`)."""

from __future__ import annotations

import gc
import random
import struct

import pytest
from aiortc.codecs.h264 import H264Encoder, h264_depayload
from aiortc.codecs.vpx import VpxPayloadDescriptor, vp8_depayload
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, unwrap_rtx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


import media
from conftest import IMPLEMENTATIONS, NO_EXTENSIONS, compiled_to_compare, examples, load_twin

from rpistream.core import rtp_format

FOUR_BYTE_START = b"\x00\x00\x00\x01"
FU_A, STAP_A = 28, 24

# Hypothesis: 60 examples per property, frames up to 1 MB.
PROPERTY = settings(max_examples=examples(60), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def load(name: str):
    return load_twin("_rtp", name)


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def rtp(request):
    return load(request.param)


@pytest.fixture(scope="module")
def both():
    """(compiled, twin): compared whenever the compiled module is built."""
    return compiled_to_compare("_rtp"), load("py")


# --- helpers: an independent view of the packets, through aiortc ---------------

def parse(packet, extensions_map: HeaderExtensionsMap | None = None) -> RtpPacket:
    return RtpPacket.parse(bytes(packet), extensions_map or HeaderExtensionsMap())


def packets(batch) -> list[bytes]:
    return [bytes(batch.packet(i)) for i in range(len(batch))]


def check_headers(batch, timestamp: int, limit: int) -> list[RtpPacket]:
    """RFC 3550 header of every laid-out packet: V=2, placeholders zero, the frame's
    timestamp, the marker on the last packet only; size within `limit`."""
    parsed = []
    for index, raw in enumerate(packets(batch)):
        assert raw[0] >> 6 == 2, "RTP version 2"
        assert len(raw) <= limit, f"packet {index} is {len(raw)} bytes, limit {limit}"
        packet = parse(raw)
        assert (packet.payload_type, packet.sequence_number, packet.ssrc) == (0, 0, 0)
        assert packet.timestamp == timestamp
        assert packet.marker == (index == len(batch) - 1)
        assert packet.padding_size == 0 and packet.csrc == []
        parsed.append(packet)
    assert batch.timestamp == timestamp
    assert batch.nbytes == sum(len(raw) for raw in packets(batch))
    return parsed


def vp8_frame(batch) -> bytes:
    return b"".join(vp8_depayload(packet.payload) for packet in map(parse, packets(batch)))


def h264_nals(batch) -> list[bytes]:
    annexb = b"".join(h264_depayload(packet.payload) for packet in map(parse, packets(batch)))
    nals = annexb.split(FOUR_BYTE_START)
    assert nals[0] == b"", "aiortc's depayloader starts every NAL with a start code"
    return nals[1:]


def limit_of(packetizer) -> int:
    """Largest media packet: the MTU less the headroom."""
    return packetizer.mtu - packetizer.headroom


def check_vp8(batch, frame: bytes, picture_id: int, packetizer) -> None:
    parsed = check_headers(batch, batch.timestamp, limit_of(packetizer))
    for index, packet in enumerate(parsed):
        descriptor, _ = VpxPayloadDescriptor.parse(packet.payload)
        assert descriptor.partition_start == (index == 0), "S only on the first packet"
        assert descriptor.partition_id == 0
        assert descriptor.picture_id == picture_id
        assert (descriptor.tl0picidx, descriptor.tid, descriptor.keyidx) == (None, None, None)
        assert packet.payload[:2] == (b"\x90\x80" if index == 0 else b"\x80\x80")
    assert vp8_frame(batch) == frame
    # The fewest packets, sizes balanced to within one byte.
    chunk = packetizer.max_payload - 4
    assert len(batch) == -(-len(frame) // chunk)
    sizes = [len(packet.payload) for packet in parsed]
    assert max(sizes) - min(sizes) <= 1


def check_h264(batch, nals: list[bytes], packetizer) -> None:
    parsed = check_headers(batch, batch.timestamp, limit_of(packetizer))
    fragment_sizes = []
    for packet in parsed:
        payload = packet.payload
        assert len(payload) <= packetizer.max_payload
        kind = payload[0] & 0x1F
        if kind == FU_A:
            start, end = payload[1] & 0x80, payload[1] & 0x40
            assert payload[1] & 0x20 == 0, "FU header R bit"
            if start:
                fragment_sizes = []
            fragment_sizes.append(len(payload) - 2)
            assert not (start and end), "a NAL that fits is not fragmented"
            if end:
                assert max(fragment_sizes) - min(fragment_sizes) <= 1, "balanced fragments"
        elif kind == STAP_A:
            units, position = [], 1
            while position < len(payload):
                size, = struct.unpack_from("!H", payload, position)
                units.append(payload[position + 2:position + 2 + size])
                position += 2 + size
            assert position == len(payload), "STAP-A sizes add up to the payload"
            assert len(units) >= 2
            assert payload[0] & 0x80 == max(unit[0] & 0x80 for unit in units), "F = OR of Fs"
            assert payload[0] & 0x60 == max(unit[0] & 0x60 for unit in units), "NRI = max"
            assert all(unit for unit in units)
    assert_fu_a_flags(parsed)
    assert h264_nals(batch) == nals


def assert_fu_a_flags(parsed: list[RtpPacket]) -> None:
    """RFC 6184 §5.8: S on the first fragment of a NAL, E on its last, the FU
    indicator carries the NAL's F|NRI, every FU header its type."""
    open_nal = None
    for packet in parsed:
        payload = packet.payload
        if payload[0] & 0x1F != FU_A:
            assert open_nal is None, "a NAL's fragments are consecutive"
            continue
        if payload[1] & 0x80:
            assert open_nal is None
            open_nal = (payload[0] & 0xE0, payload[1] & 0x1F)
        assert open_nal == (payload[0] & 0xE0, payload[1] & 0x1F)
        if payload[1] & 0x40:
            open_nal = None
    assert open_nal is None, "the last fragment has E set"


def annexb(nals: list[bytes], rng: random.Random, empty_nals: bool = False) -> bytes:
    """Join NALs with random 3- and 4-byte start codes (and, optionally, some
    empty NALs: adjacent start codes)."""
    out = bytearray()
    for nal in nals:
        if empty_nals and rng.random() < 0.3:
            out += b"\x00\x00\x01"
        out += rng.choice((b"\x00\x00\x01", FOUR_BYTE_START)) + nal
    return bytes(out)


def nal_unit(nal_type: int, nri: int, size: int, seed: int) -> bytes:
    """A valid NAL of `size` bytes: forbidden bit 0, no start-code emulation (no
    00 00 0x with x < 3), some 00 00 03 emulation-prevention sequences, last byte non-zero."""
    body = random.Random(seed).randbytes(size - 1)
    # Zero bytes go away; every 0x07 becomes the emulation-prevention triple.
    body = body.translate(bytes([1]) + bytes(range(1, 256))).replace(b"\x07", b"\x00\x00\x03")
    body = body[:size - 1].rstrip(b"\x00")  # a cut triple must not leave 00 at the end
    return bytes([nri << 5 | nal_type]) + body + b"\x05" * (size - 1 - len(body))


nal_strategy = st.builds(
    nal_unit,
    nal_type=st.integers(1, 23),
    nri=st.integers(0, 3),
    size=st.one_of(st.integers(2, 300), st.integers(2, 3000), st.integers(2, 200_000)),
    seed=st.integers(0, 2**32),
)


# --- constants -------------------------------------------------------------------

def test_constants():
    assert rtp_format.RTP_HEADER_SIZE == 12
    assert rtp_format.ONE_BYTE_EXT_HEADER == 4
    assert rtp_format.RED_HEADROOM == 1
    assert rtp_format.ULPFEC_HEADROOM == 18  # 10 FEC header + 8 level-0 header, long mask
    assert rtp_format.FLEXFEC_HEADROOM == 32  # 12 + 6 + 14 (libwebrtc FlexFEC-03, 3 K-bits)
    assert rtp_format.RTX_HEADROOM == 2
    assert rtp_format.DEFAULT_HEADROOM == 32


def test_selector_honours_no_extensions():
    import rpistream.core.rtp

    expected = load("py") if NO_EXTENSIONS else load("c")
    assert rpistream.core.rtp.Vp8Packetizer is expected.Vp8Packetizer
    assert rpistream.core.rtp.H264Packetizer is expected.H264Packetizer


def test_geometry(rtp):
    # By default, room for any FEC scheme: FlexFEC's header and the FEC
    # packet's own extension block (RFC 8285 §4.2, 4 + 8 bytes).
    packetizer = rtp.Vp8Packetizer(mtu=1200, ext_room=5)
    assert (packetizer.mtu, packetizer.ext_room, packetizer.headroom) == (1200, 8, 32 + 12)
    assert packetizer.max_payload == 1200 - 32 - 12 - 2 * (4 + 8)
    assert rtp.H264Packetizer(mtu=1500, headroom=0).max_payload == 1488
    assert rtp.H264Packetizer(mtu=1500, ext_room=8, headroom=2).max_payload == 1500 - 2 - 24


# --- real frames, reassembled by aiortc -----------------------------------------

@pytest.mark.parametrize("mtu", [1200, 500])
def test_vp8_real_frames(rtp, mtu):
    packetizer = rtp.Vp8Packetizer(mtu=mtu)
    frames = media.encode("libvpx", 12, 10)
    assert frames[0].keyframe and frames[10].keyframe and not frames[1].keyframe
    for picture_id, frame in enumerate(frames):
        batch = packetizer.packetize(frame.data, frame.timestamp, frame.keyframe)
        assert batch.keyframe == frame.keyframe
        assert batch.timestamp == frame.timestamp
        check_vp8(batch, frame.data, picture_id, packetizer)


@pytest.mark.parametrize("mtu, ext_room, slices", [(1200, 0, 1), (500, 12, 1), (1200, 0, 8)])
def test_h264_real_frames(rtp, mtu, ext_room, slices):
    packetizer = rtp.H264Packetizer(mtu=mtu, ext_room=ext_room)
    frames = media.encode("libx264", 12, 10, slices=slices)
    kinds = set()
    for frame in frames:
        batch = packetizer.packetize(frame.data, frame.timestamp, frame.keyframe)
        nals = list(H264Encoder._split_bitstream(frame.data))
        check_h264(batch, nals, packetizer)
        kinds |= {parse(raw).payload[0] & 0x1F for raw in packets(batch)}
    assert {STAP_A, FU_A} <= kinds, "SPS+PPS travel in a STAP-A, keyframes in FU-A"


def test_h264_sps_pps_idr_in_one_stap_a(rtp):
    sps, pps, idr = nal_unit(7, 3, 20, 1), nal_unit(8, 3, 5, 2), nal_unit(5, 2, 300, 3)
    frame = FOUR_BYTE_START + sps + FOUR_BYTE_START + pps + b"\x00\x00\x01" + idr
    batch = rtp.H264Packetizer().packetize(frame, 90_000, True)
    assert len(batch) == 1
    payload = parse(batch.packet(0)).payload
    assert payload == (bytes([0x60 | STAP_A]) + struct.pack("!H", 20) + sps
                       + struct.pack("!H", 5) + pps + struct.pack("!H", 300) + idr)


def test_h264_single_nal_and_fu_a_layout(rtp):
    packetizer = rtp.H264Packetizer(mtu=300, headroom=0)  # max payload 288
    small, big = nal_unit(1, 2, 288, 4), nal_unit(5, 3, 1000, 5)
    batch = packetizer.packetize(b"\x00\x00\x01" + small + b"\x00\x00\x01" + big, 1, False)
    payloads = [parse(raw).payload for raw in packets(batch)]
    assert payloads[0] == small, "RFC 6184 §5.6: Single NAL Unit packet"
    # 999 bytes after the NAL header in fragments of at most 286: 4 of 250/250/250/249.
    assert [len(p) - 2 for p in payloads[1:]] == [250, 250, 250, 249]
    assert [p[:2] for p in payloads[1:]] == [bytes([0x60 | FU_A, 0x80 | 5]),
                                             bytes([0x60 | FU_A, 5]), bytes([0x60 | FU_A, 5]),
                                             bytes([0x60 | FU_A, 0x40 | 5])]
    assert b"".join(p[2:] for p in payloads[1:]) == big[1:]


def test_h264_one_byte_nal_and_zero_padding(rtp):
    """A 1-byte NAL (end of sequence) travels alone; leading zero bytes, trailing
    zero bytes and empty NALs are framing, not data."""
    end_of_sequence = bytes([10])
    slice_nal = nal_unit(1, 2, 2000, 6)
    frame = (b"\x00\x00" + FOUR_BYTE_START + slice_nal + b"\x00\x00" + b"\x00\x00\x01"
             + b"\x00\x00\x01" + end_of_sequence + b"\x00\x00\x00")
    batch = rtp.H264Packetizer(mtu=1000).packetize(frame, 0, False)
    payloads = [parse(raw).payload for raw in packets(batch)]
    assert payloads[-1] == end_of_sequence
    assert b"".join(p[2:] for p in payloads[:-1]) == slice_nal[1:]


# --- properties -----------------------------------------------------------------

@PROPERTY
@given(sizes=st.lists(st.one_of(st.integers(1, 3000), st.integers(1, 1_000_000)),
                      min_size=1, max_size=3),
       mtu=st.integers(300, 1500), ext_room=st.sampled_from([0, 0, 4, 7, 40]),
       seed=st.integers(0, 2**32), timestamp=st.integers(0, 2**32 - 1))
def test_vp8_properties(rtp, sizes, mtu, ext_room, seed, timestamp):
    packetizer = rtp.Vp8Packetizer(mtu=mtu, ext_room=ext_room)
    rng = random.Random(seed)
    for picture_id, size in enumerate(sizes):
        frame = rng.randbytes(size)
        batch = packetizer.packetize(frame, timestamp, picture_id == 0)
        assert batch.timestamp == timestamp
        check_vp8(batch, frame, picture_id, packetizer)


@PROPERTY
@given(nals=st.lists(nal_strategy, min_size=1, max_size=8), mtu=st.integers(300, 1500),
       ext_room=st.sampled_from([0, 0, 8, 20]), seed=st.integers(0, 2**32),
       timestamp=st.integers(0, 2**32 - 1))
def test_h264_properties(rtp, nals, mtu, ext_room, seed, timestamp):
    packetizer = rtp.H264Packetizer(mtu=mtu, ext_room=ext_room)
    frame = annexb(nals, random.Random(seed), empty_nals=True)
    batch = packetizer.packetize(frame, timestamp, True)
    assert batch.timestamp == timestamp
    check_h264(batch, nals, packetizer)


def test_picture_id_wraps(rtp):
    packetizer = rtp.Vp8Packetizer()
    for _ in range(0x7FFF):
        packetizer.packetize(b"x", 0, False)
    last = packetizer.packetize(b"x", 0, False)
    after = packetizer.packetize(b"x", 0, False)
    picture_id = [VpxPayloadDescriptor.parse(parse(b.packet(0)).payload)[0].picture_id
                  for b in (last, after)]
    assert picture_id == [0x7FFF, 0]


@PROPERTY
@given(vp8_size=st.integers(1, 300_000), nals=st.lists(nal_strategy, min_size=1, max_size=6),
       mtu=st.integers(300, 1500), ext_room=st.sampled_from([0, 8]),
       seed=st.integers(0, 2**32))
def test_implementations_identical(both, vp8_size, nals, mtu, ext_room, seed):
    rng = random.Random(seed)
    vp8 = rng.randbytes(vp8_size)
    h264 = annexb(nals, rng, empty_nals=True)
    ext = bytes([0x10, 0x30])[: min(2, ext_room)]
    results = []
    for module in both:
        vp8_packetizer = module.Vp8Packetizer(mtu=mtu, ext_room=ext_room)
        h264_packetizer = module.H264Packetizer(mtu=mtu, ext_room=ext_room)
        batches = [vp8_packetizer.packetize(vp8, 1, True), vp8_packetizer.packetize(vp8, 2, False),
                   h264_packetizer.packetize(h264, 3, True)]
        results.append([(packets(batch), batch.nbytes, batch.timestamp, batch.keyframe,
                         [batch.write(i, 96, 0x12345678, 1000 + i, ext) for i in range(len(batch))],
                         [batch.write_rtx(i, 97, 0x9ABCDEF0, 7, 1000 + i, ext)
                          for i in range(len(batch))],
                         [batch.write_red(i, 100, 96, 0x12345678, 1000 + i, ext)
                          for i in range(len(batch))])
                        for batch in batches])
    assert results[0] == results[1]


# --- input types, sizes, ownership -----------------------------------------------

def test_accepts_any_bytes_like(rtp):
    frame = random.Random(7).randbytes(5000)
    h264 = annexb([nal_unit(5, 3, 4000, 8)], random.Random(9))
    expected_vp8 = packets(rtp.Vp8Packetizer().packetize(frame, 0, True))
    expected_h264 = packets(rtp.H264Packetizer().packetize(h264, 0, True))
    wrappers = (bytearray, lambda b: memoryview(b).toreadonly(),
                lambda b: memoryview(bytearray(b)))
    for wrap in wrappers:
        assert packets(rtp.Vp8Packetizer().packetize(wrap(frame), 0, True)) == expected_vp8
        assert packets(rtp.H264Packetizer().packetize(wrap(h264), 0, True)) == expected_h264


def test_four_megabyte_frames(rtp):
    rng = random.Random(10)
    frame = rng.randbytes(4 << 20)
    check_vp8(rtp.Vp8Packetizer(mtu=300).packetize(frame, 0, True), frame, 0,
              rtp.Vp8Packetizer(mtu=300))
    nal = nal_unit(5, 3, 4 << 20, 11)
    packetizer = rtp.H264Packetizer(mtu=1500)
    check_h264(packetizer.packetize(FOUR_BYTE_START + nal, 0, True), [nal], packetizer)


def test_batches_come_from_packetizers_only(rtp):
    with pytest.raises(TypeError):
        rtp.PacketBatch()


def test_packet_view_is_read_only_and_outlives_the_batch(rtp):
    batch = rtp.Vp8Packetizer().packetize(b"\x01" * 3000, 5, True)
    view = batch.packet(1)
    expected = bytes(view)
    with pytest.raises(TypeError):
        view[0] = 0
    del batch
    gc.collect()
    assert bytes(view) == expected


def test_batches_are_freed(rtp):
    """RSS stays flat while many 4 MB frames are packetized and dropped."""
    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096

    frame = b"\x00\x00\x01\x65" + b"\x11" * (4 << 20)
    vp8, h264 = rtp.Vp8Packetizer(), rtp.H264Packetizer()
    for _ in range(3):
        vp8.packetize(frame, 0, True), h264.packetize(frame, 0, True)
    before = rss()
    for _ in range(50):
        vp8.packetize(frame, 0, True), h264.packetize(frame, 0, True)
    assert rss() - before < 16 << 20, "50 × 2 batches of 4 MB were not freed"


# --- per-viewer writes, parsed by aiortc -----------------------------------------

def extensions_map() -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(
            id=2, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    ]))
    return extensions


# RFC 8285 §4.2 elements: mid "0" (id 1, 1 byte), abs-send-time 0x123456 (id 2, 3 bytes).
MID_AND_ABS_SEND_TIME = bytes([0x10]) + b"0" + bytes([0x22, 0x12, 0x34, 0x56])


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_write_and_write_rtx(rtp, codec):
    frame = random.Random(12).randbytes(3000)
    if codec == "vp8":
        packetizer = rtp.Vp8Packetizer(ext_room=8)
    else:
        packetizer = rtp.H264Packetizer(ext_room=8)
        frame = annexb([nal_unit(7, 3, 20, 1), nal_unit(8, 3, 4, 2), nal_unit(5, 3, 3000, 3)],
                       random.Random(13))
    batch = packetizer.packetize(frame, 0xFEDCBA98, True)
    laid_out = packets(batch)
    extensions = extensions_map()
    for index, original in enumerate(laid_out):
        payload = parse(original).payload
        written = batch.write(index, 96, 0xCAFEBABE, 65535 - index, MID_AND_ABS_SEND_TIME)
        assert len(written) == len(original), "same length: FEC over the batch stays valid"
        packet = parse(written, extensions)
        assert packet.payload_type == 96 and packet.ssrc == 0xCAFEBABE
        assert packet.sequence_number == 65535 - index
        assert packet.timestamp == 0xFEDCBA98
        assert packet.marker == (index == len(batch) - 1)
        assert packet.extensions.mid == "0"
        assert packet.extensions.abs_send_time == 0x123456
        assert packet.payload == payload
        assert written[12:16] == b"\xbe\xde\x00\x02" and written[22:24] == b"\x00\x00"

        rtx = batch.write_rtx(index, 97, 0x0BADF00D, 42 + index, 65535 - index,
                              MID_AND_ABS_SEND_TIME)
        assert len(rtx) == len(original) + 2
        rtx_packet = parse(rtx, extensions)
        assert (rtx_packet.payload_type, rtx_packet.ssrc, rtx_packet.sequence_number) == (
            97, 0x0BADF00D, 42 + index)
        assert rtx_packet.payload == struct.pack("!H", 65535 - index) + payload
        assert rtx_packet.extensions.mid == "0"
        restored = unwrap_rtx(rtx_packet, payload_type=96, ssrc=0xCAFEBABE)
        assert restored.serialize(extensions) == packet.serialize(extensions)
    assert packets(batch) == laid_out, "writes never touch the shared batch"


def test_write_without_extensions(rtp):
    batch = rtp.Vp8Packetizer().packetize(b"\x05" * 100, 77, False)
    written = batch.write(0, 127, 0xFFFFFFFF, 0, memoryview(b""))
    assert written[:12] == bytes([0x80, 0xFF, 0, 0, 0, 0, 0, 77, 0xFF, 0xFF, 0xFF, 0xFF])
    assert written[12:] == bytes(batch.packet(0))[12:]
    rtx = batch.write_rtx(0, 98, 1, 2, 0xABCD)
    assert rtx[:12] == bytes([0x80, 0x80 | 98, 0, 2, 0, 0, 0, 77, 0, 0, 0, 1])
    assert rtx[12:14] == b"\xab\xcd" and rtx[14:] == written[12:]


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_write_red(rtp, codec):
    """RFC 2198 §3, primary block only, as libwebrtc sends RED for ULPFEC: the
    outer header keeps the extension block; unwrapped (outer header with the
    block's PT, payload after the block header) it is exactly write()."""
    if codec == "vp8":
        batch = rtp.Vp8Packetizer(ext_room=8).packetize(random.Random(5).randbytes(3000),
                                                        0x01020304, True)
    else:
        frame = annexb([nal_unit(7, 3, 20, 1), nal_unit(8, 3, 4, 2), nal_unit(5, 3, 3000, 3)],
                       random.Random(6))
        batch = rtp.H264Packetizer(ext_room=8).packetize(frame, 0x01020304, True)
    extensions = extensions_map()
    for index in range(len(batch)):
        red = batch.write_red(index, 100, 96, 0xCAFEBABE, 65535 - index, MID_AND_ABS_SEND_TIME)
        media = batch.write(index, 96, 0xCAFEBABE, 65535 - index, MID_AND_ABS_SEND_TIME)
        assert len(red) == len(media) + 1
        packet = parse(red, extensions)
        assert (packet.payload_type, packet.ssrc, packet.sequence_number, packet.timestamp) == (
            100, 0xCAFEBABE, 65535 - index, 0x01020304)
        assert packet.marker == (index == len(batch) - 1)
        assert packet.extensions.mid == "0" and packet.extensions.abs_send_time == 0x123456
        assert packet.payload[0] == 96, "block header: F=0, block PT = media PT"
        assert packet.payload[1:] == parse(media).payload
        unwrapped = red[:1] + bytes([(red[1] & 0x80) | red[24]]) + red[2:24] + red[25:]
        assert unwrapped == media


def test_write_red_errors(rtp):
    batch = rtp.Vp8Packetizer(ext_room=4).packetize(b"\x05" * 100, 0, False)
    with pytest.raises(ValueError, match=r"media_payload_type must be 0\.\.127, got 128"):
        batch.write_red(0, 100, 128, 1, 1)
    with pytest.raises(ValueError, match=r"payload_type must be 0\.\.127, got -1"):
        batch.write_red(0, -1, 96, 1, 1)
    with pytest.raises(ValueError, match=r"header extension elements take 5 bytes"):
        batch.write_red(0, 100, 96, 1, 1, bytes(5))
    with pytest.raises(IndexError, match=r"packet index 1 is out of range"):
        batch.write_red(1, 100, 96, 1, 1)
    plain = rtp.Vp8Packetizer().packetize(b"\x05" * 100, 77, False)
    assert plain.write_red(0, 100, 127, 1, 2) == (
        bytes([0x80, 0x80 | 100, 0, 2, 0, 0, 0, 77, 0, 0, 0, 1, 127])
        + bytes(plain.packet(0))[12:])


def test_write_accepts_bytes_like_ext(rtp):
    batch = rtp.Vp8Packetizer(ext_room=4).packetize(b"\x05" * 100, 0, False)
    expected = batch.write(0, 96, 1, 2, b"\x10\x30")
    assert batch.write(0, 96, 1, 2, bytearray(b"\x10\x30")) == expected
    assert batch.write(0, 96, 1, 2, memoryview(b"\x10\x30").toreadonly()) == expected


# --- errors -----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"mtu": 299}, r"mtu must be 300\.\.9000, got 299"),
    ({"mtu": 9001}, r"mtu must be 300\.\.9000, got 9001"),
    ({"ext_room": 253}, r"ext_room must be 0\.\.252, got 253"),
    ({"ext_room": -1}, r"ext_room must be 0\.\.252, got -1"),
    ({"headroom": -1}, r"headroom must be 0\.\.1200, got -1"),
    ({"mtu": 300, "ext_room": 100},
     r"mtu=300 leaves 48 bytes of payload after headroom=136 and 116 bytes of RTP header "
     r"and extensions; at least 64 are needed"),
])
@pytest.mark.parametrize("codec", ["Vp8Packetizer", "H264Packetizer"])
def test_constructor_errors(rtp, codec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(rtp, codec)(**kwargs)


@pytest.mark.parametrize("codec", ["Vp8Packetizer", "H264Packetizer"])
def test_packetize_errors(rtp, codec):
    packetizer = getattr(rtp, codec)()
    with pytest.raises(ValueError, match="frame is empty: there is nothing to packetize"):
        packetizer.packetize(b"", 0, True)
    with pytest.raises(ValueError, match=r"timestamp must be 0\.\.4294967295, got 4294967296"):
        packetizer.packetize(b"\x00\x00\x01\x65\x01", 1 << 32, True)
    with pytest.raises(ValueError, match=r"timestamp must be 0\.\.4294967295, got -1"):
        packetizer.packetize(b"\x00\x00\x01\x65\x01", -1, True)


@pytest.mark.parametrize("frame, message", [
    (b"\x65\x01\x02\x00\x00", r"H\.264 access unit has no start code \(00 00 01\): "
                              r"the packetizer needs Annex-B byte-stream input"),
    (b"\x00\x09\x00\x00\x01\x65\x01", r"H\.264 access unit has 2 bytes before its first start "
                                      r"code; Annex-B input must begin with 00 00 01 or "
                                      r"00 00 00 01"),
    (b"\x00\x00\x00\x01\x00\x00\x01\x00", r"H\.264 access unit contains only start codes, "
                                          r"no NAL unit"),
])
def test_h264_input_errors(rtp, frame, message):
    with pytest.raises(ValueError, match=message):
        rtp.H264Packetizer().packetize(frame, 0, True)


def test_write_errors(rtp):
    batch = rtp.Vp8Packetizer(ext_room=4).packetize(b"\x05" * 100, 0, False)
    plain = rtp.Vp8Packetizer().packetize(b"\x05" * 100, 0, False)
    cases = [
        (lambda: batch.write(0, 128, 1, 1), ValueError, r"payload_type must be 0\.\.127, got 128"),
        (lambda: batch.write(0, -1, 1, 1), ValueError, r"payload_type must be 0\.\.127, got -1"),
        (lambda: batch.write(0, 96, 1 << 32, 1), ValueError,
         r"ssrc must be 0\.\.4294967295, got 4294967296"),
        (lambda: batch.write(0, 96, 1, 65536), ValueError, r"seq must be 0\.\.65535, got 65536"),
        (lambda: batch.write_rtx(0, 96, 1, 1, -1), ValueError,
         r"original_seq must be 0\.\.65535, got -1"),
        (lambda: batch.write(0, 96, 1, 1, b"\x40\x01\x02\x03\x04"), ValueError,
         r"header extension elements take 5 bytes but the packetizer reserved ext_room=4; "
         r"raise ext_room"),
        (lambda: plain.write(0, 96, 1, 1, b"\x10\x30"), ValueError,
         r"header extension elements take 2 bytes but the packetizer reserved ext_room=0"),
        (lambda: batch.write(1, 96, 1, 1), IndexError,
         r"packet index 1 is out of range for a batch of 1 packets"),
        (lambda: batch.write_rtx(-1, 96, 1, 1, 1), IndexError,
         r"packet index -1 is out of range for a batch of 1 packets"),
        (lambda: batch.packet(2), IndexError,
         r"packet index 2 is out of range for a batch of 1 packets"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_rtx_of_a_red_packet_carries_the_red_payload(rtp):
    """RFC 4588 §4 over RFC 2198: what an RTX stream with apt=red resends is the
    RED packet's payload (block header + media payload) after the OSN."""
    batch = rtp.Vp8Packetizer(mtu=1200, ext_room=8).packetize(bytes(3000), 90000, True)
    red = batch.write_red(1, 118, 96, 0xABC, 400, b"\x10" + b"0")
    rtx = batch.write_rtx(1, 119, 0xDEF, 7, 400, b"\x10" + b"0", red_block_type=96)
    header = 12 + 4 + 8
    assert rtx[header:header + 2] == struct.pack("!H", 400)
    assert rtx[header + 2:] == red[header:]
    assert rtx[1] & 0x7F == 119 and struct.unpack_from("!I", rtx, 8)[0] == 0xDEF
    with pytest.raises(ValueError, match=r"red_block_type must be -1\.\.127, got 128"):
        batch.write_rtx(1, 119, 0xDEF, 7, 400, b"", red_block_type=128)
