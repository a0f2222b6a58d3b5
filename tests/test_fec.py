"""FEC encoder (rpistream.core.fec), checked by an independent receiver (tests/fec_decoder.py).

Every test runs against the compiled module (`c`) and its pure-Python twin
(`py`), each with the PacketBatch of the same kind.

"As sent" packets, for FEC purposes, carry their mutable extension values
(abs-send-time here) zeroed: the sender computes FEC before writing them, and the
receiver zeroes them before its XOR (libwebrtc's RtpPacket::ZeroMutableExtensions),
so a restored packet has them zero. Everything else — header fields, extension
elements, payload — comes back byte for byte as that viewer's write() wrote it.
"""

from __future__ import annotations

import itertools
import random
import struct
import tracemalloc
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fec_decoder
import media
from conftest import IMPLEMENTATIONS, NO_EXTENSIONS, compiled_to_compare, examples, load_twin

from rpistream.core import fec_format

PROPERTY = settings(max_examples=examples(60), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
RED_PT, ULPFEC_PT, FLEXFEC_PT = 120, 121, 122
MID_ID, ABS_SEND_TIME_ID, OTHER_ID = 1, 3, 5
MUTABLE = frozenset({ABS_SEND_TIME_ID})


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def impl(request):
    """(fec module, rtp module) of one kind."""
    return load_twin("_fec", request.param), load_twin("_rtp", request.param)


@pytest.fixture(scope="module")
def both():
    """(compiled, twin) pairs: compared whenever the compiled modules are built."""
    return (compiled_to_compare("_fec"), compiled_to_compare("_rtp")), (
        load_twin("_fec", "py"), load_twin("_rtp", "py"))


# --- a viewer: what it sends for one group, and what its receiver makes of it -----

@dataclass(frozen=True)
class Viewer:
    payload_type: int
    ssrc: int
    seq: int  # of the group's first media packet
    ext_live: bytes  # elements as sent: abs-send-time carries a value
    ext_fec: bytes  # the same with mutable values zeroed: what FEC covers
    fec_ssrc: int = 0x0F0E0D0C
    fec_seq: int = 65530


def elements(rng: random.Random, room: int) -> tuple[bytes, bytes]:
    """RFC 8285 §4.2 one-byte elements that fit `room`: mid, abs-send-time
    (mutable, 3 bytes), an opaque constant one; (live, mutable zeroed)."""
    live, fec = b"", b""
    candidates = [(MID_ID, rng.randbytes(rng.randint(1, 3)), False),
                  (ABS_SEND_TIME_ID, rng.randbytes(3), True),
                  (OTHER_ID, rng.randbytes(rng.randint(1, 8)), False)]
    rng.shuffle(candidates)
    for element_id, value, mutable in candidates:
        element = bytes([element_id << 4 | (len(value) - 1)])
        if len(live) + 1 + len(value) <= room:
            live += element + value
            fec += element + (bytes(len(value)) if mutable else value)
    return live, fec


def laid_out_group(rtp, rng: random.Random, media_count: int, ext_room: int,
                   codec: str) -> list[tuple[object, int]]:
    """(batch, index) of `media_count` consecutive packets of a few frames, so a
    group spans frames (timestamps, markers, lengths differ)."""
    mtu = rng.randint(300, 1500)
    packetizer = (rtp.Vp8Packetizer(mtu=mtu, ext_room=ext_room) if codec == "vp8"
                  else rtp.H264Packetizer(mtu=mtu, ext_room=ext_room))
    refs, timestamp = [], rng.randint(0, 2**32 - 1)
    skip = rng.randint(0, 3)
    while len(refs) < media_count + skip:
        size = rng.choice([rng.randint(1, 400), rng.randint(1, 4 * mtu)])
        if codec == "vp8":
            frame = rng.randbytes(size)
        else:  # one NAL: no start-code emulation in it
            frame = b"\x00\x00\x01\x41" + rng.randbytes(size).replace(b"\x00", b"\x07")
        batch = packetizer.packetize(frame, timestamp, False)
        refs += [(batch, index) for index in range(len(batch))]
        timestamp = (timestamp + rng.randint(1, 6000)) & 0xFFFFFFFF
    return refs[skip:skip + media_count]


@dataclass
class Sent:
    media: list[bytes]  # index i = the group's packet i, as sent
    fec: list[bytes]
    expected: dict[int, bytes]  # seq → packet as sent, mutable values zeroed


def send(fec, scheme: str, refs, fec_masks: list[int], viewer: Viewer) -> Sent:
    """The group as one viewer sends it: RED-wrapped media + RED/ULPFEC in the
    media sequence space, or plain media + FlexFEC-03 on its own SSRC."""
    payloads = fec.encode(scheme, [batch.packet(i) for batch, i in refs], fec_masks)
    media_sent, expected = [], {}
    for offset, (batch, index) in enumerate(refs):
        seq = (viewer.seq + offset) & 0xFFFF
        if scheme == "ulpfec":
            media_sent.append(batch.write_red(index, RED_PT, viewer.payload_type,
                                              viewer.ssrc, seq, viewer.ext_live))
        else:
            media_sent.append(batch.write(index, viewer.payload_type, viewer.ssrc, seq,
                                          viewer.ext_live))
        expected[seq] = batch.write(index, viewer.payload_type, viewer.ssrc, seq,
                                    viewer.ext_fec)
    last_batch = refs[-1][0]
    fec_sent = []
    for j, payload in enumerate(payloads):
        if scheme == "ulpfec":
            # libwebrtc (ulpfec_generator.cc GetFecPackets): the last media packet's
            # header with PT=red, no marker, next sequence number of the media stream.
            header = fec_format.rtp_header(RED_PT, (viewer.seq + len(refs) + j) & 0xFFFF,
                                    last_batch.timestamp, viewer.ssrc, viewer.ext_live)
            fec_sent.append(payload.write_packet(header, viewer.seq, viewer.ssrc,
                                                 viewer.payload_type, viewer.ext_fec,
                                                 red_block_type=ULPFEC_PT))
        else:
            header = fec_format.rtp_header(FLEXFEC_PT, (viewer.fec_seq + j) & 0xFFFF,
                                    last_batch.timestamp, viewer.fec_ssrc, viewer.ext_live)
            fec_sent.append(payload.write_packet(header, viewer.seq, viewer.ssrc,
                                                 viewer.payload_type, viewer.ext_fec))
    return Sent(media_sent, fec_sent, expected)


def receive(scheme: str, sent: Sent, viewer: Viewer, lost: set[int]) -> dict[int, bytes]:
    """Recovered packets when the packets numbered in `lost` (media 0..n-1, then
    FEC n..) do not arrive."""
    if scheme == "ulpfec":
        receiver = fec_decoder.Receiver(viewer.ssrc, red_payload_type=RED_PT,
                                        ulpfec_payload_type=ULPFEC_PT, mutable_ids=MUTABLE)
    else:
        receiver = fec_decoder.Receiver(viewer.ssrc, flexfec_ssrc=viewer.fec_ssrc,
                                        mutable_ids=MUTABLE)
    for number, packet in enumerate(sent.media + sent.fec):
        if number not in lost:
            receiver.receive(packet)
    return receiver.recover()


def predicted(fec_masks: list[int], media_count: int, lost: set[int]) -> set[int]:
    """For disjoint masks: the lost media packets alone in their class, whose FEC
    packet arrived."""
    result = set()
    for j, mask in enumerate(fec_masks):
        lost_here = [i for i in range(media_count) if mask >> i & 1 and i in lost]
        if media_count + j not in lost and len(lost_here) == 1:
            result.add(lost_here[0])
    return result


def check_patterns(scheme, sent, viewer, fec_masks, media_count, patterns) -> int:
    recovered_total = 0
    for lost in patterns:
        recovered = receive(scheme, sent, viewer, lost)
        expected_indices = predicted(fec_masks, media_count, lost)
        assert {(seq - viewer.seq) & 0xFFFF for seq in recovered} == expected_indices, (
            f"loss pattern {sorted(lost)}")
        for seq, packet in recovered.items():
            assert packet == sent.expected[seq], f"packet {seq} restored byte for byte"
        recovered_total += len(recovered)
    return recovered_total


# --- constants, selector ------------------------------------------------------------

def test_constants():
    assert fec_format.SCHEMES == ("ulpfec", "flexfec-03")
    assert fec_format.MASK_KINDS == ("interleaved", "block")
    assert fec_format.MAX_MEDIA_PACKETS == 48
    assert fec_format.DEFAULT_KIND == "interleaved"
    assert 0 < fec_format.DEFAULT_RATE <= 1


def test_selector_honours_no_extensions():
    import rpistream.core.fec

    expected = load_twin("_fec", "py" if NO_EXTENSIONS else "c")
    assert rpistream.core.fec.encode is expected.encode
    assert rpistream.core.fec.FecPayload is expected.FecPayload


# --- masks and rates ----------------------------------------------------------------

def test_masks_examples(impl):
    fec, _ = impl
    assert fec_format.masks(10, 3, "interleaved") == [0b1001001001, 0b0010010010, 0b0100100100]
    assert fec_format.masks(10, 3, "block") == [0b1111, 0b1110000, 0b1110000000]
    assert fec_format.masks(1, 1) == [1]
    assert fec_format.masks(48, 48, "block") == [1 << i for i in range(48)]
    assert fec_format.masks(48, 1, "interleaved") == [(1 << 48) - 1]


@pytest.mark.parametrize("kind", ["interleaved", "block"])
def test_masks_partition_the_group(impl, kind):
    fec, _ = impl
    for media_count in range(1, 49):
        for fec_count in range(1, media_count + 1):
            result = fec_format.masks(media_count, fec_count, kind)
            assert len(result) == fec_count
            assert all(mask for mask in result), "every FEC packet protects something"
            assert sum(result) == (1 << media_count) - 1, "disjoint, covering every packet"
            sizes = [bin(mask).count("1") for mask in result]
            assert max(sizes) - min(sizes) <= 1, "classes balanced"
            if kind == "interleaved":
                # Any burst of fec_count consecutive packets hits each class once.
                for start in range(media_count - fec_count + 1):
                    burst = ((1 << fec_count) - 1) << start
                    assert all(bin(mask & burst).count("1") == 1 for mask in result)
            else:
                for mask in result:  # contiguous runs
                    low = mask & -mask
                    assert mask // low & (mask // low + 1) == 0


def test_fec_count(impl):
    fec, _ = impl
    assert fec_format.fec_count(10) == 3  # DEFAULT_RATE 0.25
    assert fec_format.fec_count(10, 0.25) == 3
    assert fec_format.fec_count(20, 0.15) == 3, "20 × 0.15 is 3, not 3.0000000000000004 rounded up"
    assert fec_format.fec_count(1, 0.01) == 1
    assert fec_format.fec_count(48, 1) == 48
    assert fec_format.fec_count(7, 0.5) == 4


# --- known answers ------------------------------------------------------------------

def rtp_packet(first: int, second: int, timestamp: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", first, second, 0, timestamp, 0) + payload


TWO_PACKETS = [rtp_packet(0x80, 0x00, 0x11223344, b"\x01\x02\x03"),
               rtp_packet(0x80, 0x80, 0x55667788, b"\x10\x20")]


def test_ulpfec_known_answer(impl):
    """RFC 5109 §7.3 + §7.4 by hand: P/X/CC and M/PT XOR, TS XOR 0x444444CC,
    length XOR 3 ^ 2, protection length 3, mask bits 0 and 1 MSB first."""
    fec, _ = impl
    both_packets, = fec.encode("ulpfec", TWO_PACKETS, [0b11])
    assert both_packets.payload == bytes.fromhex("00800000444444cc00010003c000112203")
    assert (both_packets.count, both_packets.mask, both_packets.protection_length,
            both_packets.header_size) == (2, 3, 3, 14)
    # Even k: the viewer's PT cancels; only the SN base changes.
    assert both_packets.write(0xFFFE, 0x12345678, 96) == bytes.fromhex(
        "0080fffe444444cc00010003c000112203")
    second, = fec.encode("ulpfec", TWO_PACKETS, [0b10])
    assert second.write(7, 0, 96) == bytes.fromhex("00e0000755667788000200024000" "1020")


def test_ulpfec_long_mask(impl):
    """More than 16 packets: L=1 and a 48-bit mask (RFC 5109 §7.4)."""
    fec, _ = impl
    packets = [rtp_packet(0x80, 0, i, bytes([i])) for i in range(17)]
    payload, = fec.encode("ulpfec", packets, [1 << 16 | 1])
    assert payload.header_size == 18
    assert payload.payload[0] == 0x40, "E=0, L=1, P=X=CC=0"
    assert payload.payload[12:18] == bytes.fromhex("800080000000")
    assert payload.payload[18:] == bytes([0 ^ 16])


def test_flexfec_known_answer(impl):
    """libwebrtc's FlexFEC-03 base header: R=F=0, length recovery at bytes 2-3,
    SSRCCount 1, protected SSRC and SN base patched per viewer."""
    fec, _ = impl
    payload, = fec.encode("flexfec-03", TWO_PACKETS, [0b11])
    assert payload.payload == bytes.fromhex(
        "00800001444444cc" "01000000" "00000000" "0000" "e000" "112203")
    assert payload.write(5, 0xAABBCCDD, 96) == bytes.fromhex(
        "00800001444444cc" "01000000" "aabbccdd" "0005" "e000" "112203")


def ulpfec_mask_to_int(mask: bytes) -> int:
    return sum(1 << i for i in range(8 * len(mask)) if mask[i // 8] >> (7 - i % 8) & 1)


# flexfec_03_header_reader_writer_unittest.cc, Flexfec03HeaderWriterTest.FinalizesHeader*:
# (libwebrtc ULPFEC mask, the FlexFEC-03 mask with K-bits it writes).
LIBWEBRTC_MASKS = [
    (bytes([0x11, 0x02]), bytes([0x88, 0x81])),
    (bytes([0x91, 0x02, 0x08, 0x44, 0x00, 0x84]), bytes([0x48, 0x81, 0x82, 0x11, 0x00, 0x21])),
    (bytes([0x22, 0x22, 0x44, 0x44, 0x44, 0x41]),
     bytes([0x11, 0x11, 0x11, 0x11, 0x11, 0x10, 0xA0, 0, 0, 0, 0, 0, 0, 0])),
]


@pytest.mark.parametrize("ulpfec_mask, flexfec_mask", LIBWEBRTC_MASKS)
def test_flexfec_masks_match_libwebrtc(impl, ulpfec_mask, flexfec_mask):
    fec, _ = impl
    media_count = 16 if len(ulpfec_mask) == 2 else 48
    packets = [rtp_packet(0x80, 0, 0, b"\x00")] * media_count
    mask = ulpfec_mask_to_int(ulpfec_mask)
    flexfec, = fec.encode("flexfec-03", packets, [mask])
    assert flexfec.header_size == 18 + len(flexfec_mask)
    assert flexfec.payload[18:flexfec.header_size] == flexfec_mask
    ulpfec, = fec.encode("ulpfec", packets, [mask])
    assert ulpfec.payload[12:ulpfec.header_size] == ulpfec_mask
    parsed = fec_decoder.parse_flexfec03(flexfec.write(825, 1254983, 0))
    assert parsed.protected == [(825 + i) & 0xFFFF for i in range(48) if mask >> i & 1]


@pytest.mark.parametrize("media_count, mask, mask_size", [
    (16, 0x7FFF, 2),  # 16-bit ULPFEC mask, bit 15 clear: K-bit 0
    (16, 1 << 15, 6),  # bit 15 set: K-bit 1
    (17, 1, 6),  # 48-bit ULPFEC mask: at least K-bit 1, as libwebrtc
    (48, (1 << 46) - 1, 6),
    (47, 1 << 46, 14),
    (48, (1 << 48) - 1, 14),
])
def test_flexfec_mask_sizes(impl, media_count, mask, mask_size):
    fec, _ = impl
    packets = [rtp_packet(0x80, 0, 0, b"\x00")] * media_count
    payload, = fec.encode("flexfec-03", packets, [mask])
    assert payload.header_size == 18 + mask_size
    parsed = fec_decoder.parse_flexfec03(payload.payload)
    assert parsed.protected == [i for i in range(48) if mask >> i & 1]


# --- RED ----------------------------------------------------------------------------

def test_red_wrapped_fec_packet(impl):
    """RFC 2198 §3: the caller's header, one block header F=0|ulpfec PT, the payload."""
    fec, rtp = impl
    batch = rtp.Vp8Packetizer(ext_room=8).packetize(b"\x07" * 2000, 1234, True)
    payload, = fec.encode("ulpfec", [batch.packet(0), batch.packet(1)], [0b01])
    ext = bytes([0x10, 0x41, 0x32, 0, 0, 0])  # mid "A", abs-send-time zeroed
    header = fec_format.rtp_header(RED_PT, 9, 1234, 0xDEADBEEF, ext, ext_room=8)
    assert len(header) == 24 and header[:2] == bytes([0x90, RED_PT])
    assert header[12:16] == b"\xbe\xde\x00\x02"
    packet = payload.write_packet(header, 7, 0xDEADBEEF, 96, ext, red_block_type=ULPFEC_PT)
    assert packet == header + bytes([ULPFEC_PT]) + payload.write(7, 0xDEADBEEF, 96, ext)
    assert payload.write_packet(header, 7, 0xDEADBEEF, 96, ext) == (
        header + payload.write(7, 0xDEADBEEF, 96, ext))
    assert payload.write_packet(memoryview(header), 7, 1, 96, bytearray(ext)) == (
        header + payload.write(7, 1, 96, ext))


# --- the property: every loss the masks can repair is repaired, byte for byte ---------

@PROPERTY
@given(seed=st.integers(0, 2**32),
       media_count=st.one_of(st.integers(1, 48), st.sampled_from([1, 16, 17, 47, 48])),
       rate=st.floats(0.01, 1.0), kind=st.sampled_from(["interleaved", "block"]),
       scheme=st.sampled_from(["ulpfec", "flexfec-03"]),
       payload_type=st.integers(0, 119), ssrc=st.integers(0, 2**32 - 1),
       seq=st.one_of(st.integers(65480, 65535), st.integers(0, 65535)),
       ext_room=st.sampled_from([0, 4, 8, 12, 20]), codec=st.sampled_from(["vp8", "h264"]))
def test_recovery(impl, seed, media_count, rate, kind, scheme, payload_type, ssrc, seq,
                  ext_room, codec):
    fec, rtp = impl
    rng = random.Random(seed)
    refs = laid_out_group(rtp, rng, media_count, ext_room, codec)
    fec_masks = fec_format.masks(media_count, fec_format.fec_count(media_count, rate), kind)
    live, zeroed = elements(rng, ext_room)
    viewer = Viewer(payload_type, ssrc, seq, live, zeroed)
    sent = send(fec, scheme, refs, fec_masks, viewer)
    total = media_count + len(fec_masks)
    singles = [{number} for number in range(total)]
    if total <= 10:  # every loss pattern of media and FEC packets
        subsets = [{n for n in range(total) if bits >> n & 1} for bits in range(1 << total)]
        pairs = []
    else:
        pairs = [set(pair) for pair in itertools.combinations(range(total), 2)]
        pairs = rng.sample(pairs, min(len(pairs), 60))
        subsets = [set(rng.sample(range(total), rng.randint(2, total))) for _ in range(10)]
    if kind == "interleaved":  # any burst of up to fec_count media packets
        bursts = [set(range(start, min(start + len(fec_masks), media_count)))
                  for start in range(media_count)]
    else:  # any one loss per block
        bursts = [{rng.choice([i for i in range(media_count) if mask >> i & 1])
                   for mask in fec_masks} for _ in range(5)]
    for burst in bursts:
        assert predicted(fec_masks, media_count, burst) == burst
    check_patterns(scheme, sent, viewer, fec_masks, media_count,
                   singles + pairs + subsets + bursts)
    # Any single media loss is repaired.
    for number in range(media_count):
        assert len(receive(scheme, sent, viewer, {number})) == 1


@PROPERTY
@given(seed=st.integers(0, 2**32), media_count=st.integers(1, 24),
       fec_count=st.integers(1, 10), scheme=st.sampled_from(["ulpfec", "flexfec-03"]),
       ext_room=st.sampled_from([0, 8]))
def test_overlapping_masks(impl, seed, media_count, fec_count, scheme, ext_room):
    """Masks need not be disjoint: random ones, recovered iteratively as libwebrtc's
    AttemptRecovery does (a restored packet completes another FEC packet)."""
    fec, rtp = impl
    rng = random.Random(seed)
    refs = laid_out_group(rtp, rng, media_count, ext_room, "vp8")
    fec_masks = [rng.randint(1, (1 << media_count) - 1) for _ in range(fec_count)]
    live, zeroed = elements(rng, ext_room)
    viewer = Viewer(rng.randint(0, 119), rng.randint(0, 2**32 - 1), rng.randint(0, 65535),
                    live, zeroed)
    sent = send(fec, scheme, refs, fec_masks, viewer)
    for _ in range(20):
        lost = set(rng.sample(range(media_count), rng.randint(1, media_count)))
        recovered = receive(scheme, sent, viewer, lost)
        for seq, packet in recovered.items():
            assert packet == sent.expected[seq]
        # Peeling by masks alone must reach the same set.
        known = set(range(media_count)) - lost
        changed = True
        while changed:
            changed = False
            for mask in fec_masks:
                missing = [i for i in range(media_count) if mask >> i & 1 and i not in known]
                if len(missing) == 1:
                    known.add(missing[0])
                    changed = True
        assert {(seq - viewer.seq) & 0xFFFF for seq in recovered} == known & lost


@pytest.mark.parametrize("scheme, codec", [("ulpfec", "libvpx"), ("flexfec-03", "libx264")])
def test_real_video_groups(impl, scheme, codec):
    """Real frames, groups of up to ten packets across frame boundaries, packets
    0, 4 and 8 of each lost: one per interleaved class, each restored exactly."""
    fec, rtp = impl
    packetizer = (rtp.Vp8Packetizer(mtu=1000, ext_room=8) if codec == "libvpx"
                  else rtp.H264Packetizer(mtu=1000, ext_room=8))
    refs = []
    for frame in media.encode(codec, 12, 10):
        batch = packetizer.packetize(frame.data, frame.timestamp, frame.keyframe)
        refs += [(batch, index) for index in range(len(batch))]
    seq, restored = 65500, 0
    live = bytes([MID_ID << 4, 0x30, ABS_SEND_TIME_ID << 4 | 2, 1, 2, 3])
    zeroed = live[:3] + bytes(3)
    for start in range(0, len(refs), 10):
        group = refs[start:start + 10]
        fec_masks = fec_format.masks(len(group), fec_format.fec_count(len(group)))
        viewer = Viewer(96, 0x1234ABCD, seq, live, zeroed)
        sent = send(fec, scheme, group, fec_masks, viewer)
        lost = {i for i in (0, 4, 8) if i < len(group)}
        restored += check_patterns(scheme, sent, viewer, fec_masks, len(group), [lost])
        seq = (seq + len(group) + (len(fec_masks) if scheme == "ulpfec" else 0)) & 0xFFFF
    assert restored > 50


# --- the twins agree ------------------------------------------------------------------

@PROPERTY
@given(seed=st.integers(0, 2**32), media_count=st.integers(1, 48),
       fec_count=st.integers(1, 48), scheme=st.sampled_from(["ulpfec", "flexfec-03"]),
       ext_room=st.sampled_from([0, 4, 16]), disjoint=st.booleans())
def test_implementations_identical(both, seed, media_count, fec_count, scheme, ext_room,
                                   disjoint):
    rng = random.Random(seed)
    fec_count = min(fec_count, media_count)
    if disjoint:
        fec_masks = fec_format.masks(media_count, fec_count,
                                                  rng.choice(["interleaved", "block"]))
    else:
        fec_masks = [rng.randint(1, (1 << media_count) - 1) for _ in range(fec_count)]
    outputs = []
    live, zeroed = elements(rng, ext_room)
    header = fec_format.rtp_header(RED_PT, 1, 2, 3, live)
    arguments = (rng.randint(0, 65535), rng.randint(0, 2**32 - 1), rng.randint(0, 127), zeroed)
    for fec, rtp in both:
        refs = laid_out_group(rtp, random.Random(seed), media_count, ext_room, "vp8")
        payloads = fec.encode(scheme, [batch.packet(i) for batch, i in refs], fec_masks)
        outputs.append([(p.payload, p.count, p.mask, p.protection_length, p.header_size,
                         p.ext_room, p.scheme, len(p), p.write(*arguments),
                         p.write_packet(header, *arguments, red_block_type=ULPFEC_PT),
                         p.write_packet(header, *arguments)) for p in payloads]
                       + [bytes(batch.packet(i)) for batch, i in refs])
    assert outputs[0] == outputs[1]


def test_xor_parity(impl):
    fec, _ = impl
    assert fec.xor_parity([]) == b""
    assert fec.xor_parity([b"\x01\x02\x03", bytearray(b"\x10"), memoryview(b"\x00\x20")]) == (
        b"\x11\x22\x03")
    rng = random.Random(3)
    for size in range(0, 200):
        packets = [rng.randbytes(rng.randint(0, size)) for _ in range(rng.randint(1, 5))]
        expected = bytearray(max(map(len, packets)))
        for packet in packets:
            for index, value in enumerate(packet):
                expected[index] ^= value
        assert fec.xor_parity(packets) == expected


def test_shared_batches_untouched_and_memory_flat(impl):
    """encode() reads the shared packets, never writes them; repeated encodes and
    writes leave no memory behind."""
    fec, rtp = impl
    batch = rtp.Vp8Packetizer(ext_room=8).packetize(bytes(range(256)) * 40, 1, True)
    packets = [batch.packet(i) for i in range(len(batch))]
    before = [bytes(packet) for packet in packets]

    def work():
        for payload in fec.encode("flexfec-03", packets, fec_format.masks(len(packets), 3)):
            payload.write_packet(b"\x80" * 12, 1, 2, 96, b"\x10\x30")

    for _ in range(50):
        work()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    for _ in range(2000):
        work()
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert end - start < 10_000
    assert [bytes(packet) for packet in packets] == before


# --- errors ---------------------------------------------------------------------------

def test_encode_errors(impl):
    fec, _ = impl
    packet = rtp_packet(0x80, 0, 0, b"\x01")
    cases = [
        (lambda: fec.encode("fec", [packet], [1]),
         r"FEC scheme must be 'ulpfec' or 'flexfec-03', got 'fec'"),
        (lambda: fec.encode("ulpfec", [], [1]),
         r"an FEC group needs at least one media packet, got none"),
        (lambda: fec.encode("flexfec-03", [packet] * 49, [1]),
         r"an FEC group protects at most 48 media packets \(RFC 5109 §7\.4: 48-bit mask\), "
         r"got 49; split the group"),
        (lambda: fec.encode("ulpfec", [packet, b"\x80" * 11], [1]),
         r"packet 1 is 11 bytes, shorter than an RTP header \(12\)"),
        (lambda: fec.encode("ulpfec", [b"\x40" + bytes(12)], [1]),
         r"packet 0 is not RTP version 2 \(first byte 0x40\)"),
        (lambda: fec.encode("ulpfec", [packet, packet], [3, 0]),
         r"mask 1 is 0: it must name 1\.\.2 packets of the group, as an int with bits 0\.\.1"),
        (lambda: fec.encode("ulpfec", [packet, packet], [4]),
         r"mask 0 is 4: it must name 1\.\.2 packets of the group"),
        (lambda: fec.encode("ulpfec", [packet], [-1]), r"mask 0 is -1: it must name"),
        (lambda: fec.encode("ulpfec", [packet], ["1"]), r"mask 0 is '1': it must name"),
        (lambda: fec_format.masks(0, 1), r"media_count must be 1\.\.48, got 0"),
        (lambda: fec_format.masks(49, 1), r"media_count must be 1\.\.48, got 49"),
        (lambda: fec_format.masks(10, 11), r"fec_count must be 1\.\.10, got 11"),
        (lambda: fec_format.masks(10, 0), r"fec_count must be 1\.\.10, got 0"),
        (lambda: fec_format.masks(10, 2, "random"),
         r"mask kind must be 'interleaved' or 'block', got 'random'"),
        (lambda: fec_format.fec_count(10, 0),
         r"FEC rate must be above 0 and at most 1 \(FEC packets per media packet\), got 0"),
        (lambda: fec_format.fec_count(10, 1.5), r"FEC rate must be above 0 and at most 1 .*got 1\.5"),
        (lambda: fec_format.fec_count(49, 0.5), r"media_count must be 1\.\.48, got 49"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert fec.encode("ulpfec", [packet], []) == []
    with pytest.raises(TypeError, match="a FecPayload comes from encode"):
        fec.FecPayload()


def test_write_errors(impl):
    fec, rtp = impl
    batch = rtp.Vp8Packetizer(ext_room=8).packetize(b"\x05" * 100, 0, False)
    plain = rtp.Vp8Packetizer().packetize(b"\x05" * 100, 0, False)
    payload, = fec.encode("ulpfec", [batch.packet(0)], [1])
    bare, = fec.encode("flexfec-03", [plain.packet(0)], [1])
    assert payload.ext_room == 8 and bare.ext_room == 0
    cases = [
        (lambda: payload.write(65536, 1, 96), r"sn_base must be 0\.\.65535, got 65536"),
        (lambda: payload.write(-1, 1, 96), r"sn_base must be 0\.\.65535, got -1"),
        (lambda: payload.write(0, 1 << 32, 96),
         r"media_ssrc must be 0\.\.4294967295, got 4294967296"),
        (lambda: payload.write(0, 1, 128), r"payload_type must be 0\.\.127, got 128"),
        (lambda: payload.write(0, 1, 96, bytes(9)),
         r"header extension elements take 9 bytes but the packetizer of the protected "
         r"packets reserved ext_room=8; raise ext_room"),
        (lambda: bare.write(0, 1, 96, b"\x10\x30"),
         r"header extension elements take 2 bytes but the packetizer of the protected "
         r"packets reserved ext_room=0"),
        (lambda: payload.write_packet(b"", 0, 1, 96, b"", 128),
         r"red_block_type must be -1\.\.127, got 128"),
        (lambda: payload.write_packet(b"", 0, 1, 96, bytes(9), 100),
         r"header extension elements take 9 bytes"),
        (lambda: fec_format.rtp_header(128, 0, 0, 0), r"payload_type must be 0\.\.127, got 128"),
        (lambda: fec_format.rtp_header(96, 0, 1 << 32, 0),
         r"timestamp must be 0\.\.4294967295, got 4294967296"),
        (lambda: fec_format.rtp_header(96, 0, 0, 0, b"\x40\x30\x20\x01\x02", ext_room=2),
         r"header extension elements take 5 bytes but ext_room=4; raise ext_room"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_rtp_header(impl):
    fec, _ = impl
    assert fec_format.rtp_header(96, 0x1234, 0x01020304, 0xA0B0C0D0) == bytes.fromhex(
        "80601234" "01020304" "a0b0c0d0")
    assert fec_format.rtp_header(127, 0, 0, 0, b"\x10\x30", marker=True) == bytes.fromhex(
        "90ff0000" "00000000" "00000000" "bede0001" "10300000")
    assert fec_format.rtp_header(0, 0, 0, 0, b"", ext_room=5)[12:] == bytes.fromhex(
        "bede0002" "0000000000000000")
