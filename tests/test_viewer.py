"""Viewer and Broadcaster policy, driven with real packet batches and a socket
that can back up: bounded queues, skip to keyframe, slow-viewer disconnect,
NACK answered from the bounded history, sender and receiver reports."""

import struct

import pytest

from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
)

from rpistream.core.rtp import Vp8Packetizer
from rpistream.webrtc import viewer as viewer_module
from rpistream.stream.broadcaster import Broadcaster
from rpistream.webrtc.viewer import Viewer, ViewerParameters

PARAMS = ViewerParameters(payload_type=96, ssrc=0x1111, rtx_payload_type=97, rtx_ssrc=0x2222,
                          mid="0", mid_extension_id=1, abs_send_time_extension_id=3,
                          cname="test")


class Socket:
    """Stands where the DTLS transport's send is: records what was sent, and
    can back up like a full socket buffer (returns 0, sends nothing)."""

    def __init__(self):
        self.sent: list[bytes] = []
        self.backed_up = False

    def __call__(self, packet: bytes) -> int:
        if self.backed_up:
            return 0
        self.sent.append(packet)
        return len(packet) + 10  # SRTP's authentication tag


def make_viewer(socket, *, queue_frames=3, slow_timeout=5.0, params=PARAMS):
    requests, reasons = [], []
    packetizer = Vp8Packetizer(mtu=1200, ext_room=12)
    viewer = Viewer("s1", params, send=socket, header_size=12 + 4 + 12, ext_room=12,
                    request_keyframe=requests.append, disconnect=reasons.append,
                    queue_frames=queue_frames, slow_timeout=slow_timeout)
    return viewer, packetizer, requests, reasons


def frames(packetizer, count, *, keyframe_every=10, size=3000, start=0):
    return [packetizer.packetize(bytes([i % 256]) * size, 3000 * i, i % keyframe_every == 0)
            for i in range(start, start + count)]


def seqs(packets):
    return [struct.unpack_from("!H", p, 2)[0] for p in packets]


def test_starts_on_a_keyframe_and_sends_every_packet_in_order():
    socket = Socket()
    viewer, packetizer, requests, _ = make_viewer(socket)
    batches = frames(packetizer, 12, start=5)  # frames 5..9 are deltas, 10 is a keyframe
    for batch in batches:
        viewer.offer(batch)
    assert viewer.frames_skipped == 5 and viewer.frames_sent == 7
    sent = seqs(socket.sent)
    assert sent == [(sent[0] + i) & 0xFFFF for i in range(len(sent))]
    assert socket.sent[0][1] & 0x7F == 96 and struct.unpack_from("!I", socket.sent[0], 8)[0] == 0x1111
    # mid "0" at id 1 and abs-send-time at id 3 in the extension room.
    assert socket.sent[0][16:18] == b"\x10" + b"0" and socket.sent[0][18] == 0x32
    assert viewer.octets_sent == sum(len(p) - 28 for p in socket.sent)


def test_a_backed_up_socket_keeps_at_most_queue_frames_then_skips_to_a_keyframe():
    socket = Socket()
    viewer, packetizer, requests, _ = make_viewer(socket, queue_frames=3)
    batches = frames(packetizer, 30)
    viewer.offer(batches[0])
    socket.backed_up = True
    depths = []
    for batch in batches[1:15]:
        viewer.offer(batch)
        depths.append(viewer.queue_depth)
    assert max(depths) <= 3, "the queue never grows past its bound"
    assert viewer.state == "waiting-for-keyframe" and viewer.skips_to_keyframe >= 1
    assert requests and requests[-1] == "fell behind"
    socket.backed_up = False
    sent_before = len(socket.sent)
    for batch in batches[15:25]:  # frame 20 is the next keyframe
        viewer.offer(batch)
    resumed = socket.sent[sent_before:]
    assert resumed and viewer.state == "streaming"
    first_resumed_frame = next(b for b in batches[15:25] if b.keyframe)
    assert resumed[0][4:8] == first_resumed_frame.packet(0)[4:8], "resumes on the keyframe"


def test_a_viewer_behind_too_long_is_disconnected_with_the_reason(monkeypatch):
    socket = Socket()
    viewer, packetizer, _, reasons = make_viewer(socket, slow_timeout=2.0)
    clock = [100.0]
    monkeypatch.setattr(viewer_module.time, "monotonic", lambda: clock[0])
    batches = frames(packetizer, 20)
    viewer.offer(batches[0])
    socket.backed_up = True
    for batch in batches[1:10]:
        viewer.offer(batch)
    viewer.check(clock[0] + 1.0)
    assert not reasons
    viewer.check(clock[0] + 2.5)
    assert reasons and reasons[0].startswith("behind for more than 2 s")
    assert viewer.state == "closed" and viewer.queue_depth == 0
    viewer.offer(batches[10])  # a closed viewer takes nothing more
    assert viewer.queue_depth == 0


def nack(ssrc, lost):
    return RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=ssrc, lost=lost)


async def test_nack_is_answered_by_rtx_from_the_history():
    socket = Socket()
    viewer, packetizer, _, _ = make_viewer(socket)
    for batch in frames(packetizer, 5):
        viewer.offer(batch)
    originals = list(socket.sent)
    lost = seqs(originals)[2:4]
    await viewer._handle_rtcp_packet(nack(PARAMS.ssrc, lost))
    rtx = socket.sent[len(originals):]
    assert len(rtx) == 2 and viewer.packets_retransmitted == 2
    for packet, seq, original in zip(rtx, lost, originals[2:4]):
        assert packet[1] & 0x7F == 97 and struct.unpack_from("!I", packet, 8)[0] == 0x2222
        assert struct.unpack_from("!H", packet, 28)[0] == seq  # RFC 4588 §4: OSN first
        assert packet[30:] == original[28:]


async def test_without_rtx_the_original_packet_is_resent_and_old_ones_are_forgotten():
    socket = Socket()
    params = ViewerParameters(**{**PARAMS.__dict__, "rtx_payload_type": None})
    viewer, packetizer, _, _ = make_viewer(socket, params=params)
    count = 0
    for batch in frames(packetizer, 400, size=3000):  # 3 packets each: past the history
        viewer.offer(batch)
        count += len(batch)
    assert count > viewer_module.HISTORY_PACKETS
    first, last = seqs(socket.sent[:1])[0], seqs(socket.sent[-1:])[0]
    sent = len(socket.sent)
    await viewer._handle_rtcp_packet(nack(PARAMS.ssrc, [first, last]))
    assert socket.sent[sent:] == [socket.sent[-1]], "only the packet still in the history"


async def test_reports_pli_and_rtt():
    socket = Socket()
    viewer, packetizer, requests, _ = make_viewer(socket)
    viewer.offer(frames(packetizer, 1)[0])
    viewer.send_report(rtp_timestamp=12345)
    report = RtcpPacket.parse(socket.sent[-1])
    sr = report[0]
    assert sr.ssrc == PARAMS.ssrc and sr.sender_info.packet_count == viewer.packets_sent
    assert sr.sender_info.octet_count == viewer.octets_sent
    assert sr.sender_info.rtp_timestamp == 12345
    lsr = (sr.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
    rr = RtcpRrPacket(ssrc=9, reports=[RtcpReceiverInfo(
        ssrc=PARAMS.ssrc, fraction_lost=64, packets_lost=3, highest_sequence=0, jitter=7,
        lsr=lsr, dlsr=0)])
    await viewer._handle_rtcp_packet(rr)
    assert viewer.fraction_lost == 0.25 and viewer.packets_lost == 3
    assert viewer.rtt is not None and viewer.rtt < 1.0
    await viewer._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=9,
                                                    media_ssrc=PARAMS.ssrc))
    assert requests[-1] == "PLI"


class KeyframeCounter:
    def __init__(self):
        self.requests = 0

    def request_keyframe(self):
        self.requests += 1


def test_keyframe_requests_are_rate_limited_across_viewers(monkeypatch):
    from rpistream.stream import broadcaster as broadcaster_module

    clock = [50.0]
    monkeypatch.setattr(broadcaster_module.time, "monotonic", lambda: clock[0])
    source = KeyframeCounter()
    broadcaster = Broadcaster("cam", None, source.request_keyframe, None,
                              keyframe_min_interval=0.5)
    assert broadcaster.request_keyframe("PLI")
    assert not broadcaster.request_keyframe("PLI")
    clock[0] += 0.4
    assert not broadcaster.request_keyframe("new viewer")
    clock[0] += 0.2
    assert broadcaster.request_keyframe("PLI")
    assert source.requests == 2 and broadcaster.keyframe_requests_suppressed == 2


async def test_a_rate_limited_keyframe_request_is_put_off_not_dropped():
    import asyncio

    class Waiting:
        state = "waiting-for-keyframe"
        session_id = "v"

        def close(self, reason):
            pass

    source = KeyframeCounter()
    broadcaster = Broadcaster("cam", None, source.request_keyframe, None,
                              keyframe_min_interval=0.1)
    broadcaster._loop = asyncio.get_running_loop()
    broadcaster.viewers["v"] = Waiting()
    assert broadcaster.request_keyframe("new viewer")
    assert not broadcaster.request_keyframe("new viewer")
    assert source.requests == 1
    await asyncio.sleep(0.2)
    assert source.requests == 2, "the put-off request went out when the interval ended"
    broadcaster._loop = None
    broadcaster.stop()


# --- FEC through the viewer's send path, recovered by the tests' own decoder -----

FEC_PARAMS = {
    "ulpfec": dict(fec_scheme="ulpfec", red_payload_type=118, ulpfec_payload_type=120),
    "flexfec-03": dict(fec_scheme="flexfec-03", flexfec_payload_type=49, flexfec_ssrc=0x3333),
}


@pytest.mark.parametrize("scheme", ["ulpfec", "flexfec-03"])
def test_fec_sent_by_a_viewer_repairs_any_single_lost_packet(scheme):
    """Frames of 1..60 packets through Broadcaster._fan_out to two viewers (one
    numbering its packets near the 16-bit wrap); each viewer's own packets,
    one lost at a time, are restored byte for byte by an FEC receiver written
    from the specs (tests/fec_decoder.py)."""
    from fec_decoder import Receiver, seq_of, unwrap_red, zero_extensions

    params = ViewerParameters(**{**PARAMS.__dict__, **FEC_PARAMS[scheme]})
    broadcaster = Broadcaster("cam", None, KeyframeCounter().request_keyframe, None,
                              keyframe_min_interval=0.5, fec_rate=30, fec_max_frames=1)
    sockets = [Socket(), Socket()]
    viewers = [make_viewer(socket, params=params)[0] for socket in sockets]
    viewers[1]._seq = 65530
    for index, viewer in enumerate(viewers):
        viewer.session_id = f"v{index}"
        broadcaster.viewers[viewer.session_id] = viewer
    packetizer = Vp8Packetizer(mtu=1200, ext_room=12)
    for i, size in enumerate([100, 3000, 60_000, 500, 9000]):  # 1, 3, 55, 1, 8 packets
        broadcaster._fan_out(packetizer.packetize(bytes([i]) * size, 3000 * i, i == 0))
    abs_send_time = frozenset({PARAMS.abs_send_time_extension_id})
    for viewer, socket in zip(viewers, sockets):
        assert viewer.fec_packets_sent > 0 and viewer.fec_groups_skipped == 0
        media = [p for p in socket.sent if p[1] & 0x7F != 49 and not
                 (scheme == "ulpfec" and unwrap_red(p)[1] & 0x7F == 120)]
        fec = [p for p in socket.sent if p not in media]
        for lost in media:
            receiver = Receiver(media_ssrc=PARAMS.ssrc, mutable_ids=abs_send_time,
                                **({"red_payload_type": 118, "ulpfec_payload_type": 120}
                                   if scheme == "ulpfec" else {"flexfec_ssrc": 0x3333}))
            for packet in media + fec:
                if packet is not lost:
                    receiver.receive(packet)
            restored = receiver.recover()
            expected = unwrap_red(lost) if scheme == "ulpfec" else lost
            assert restored[seq_of(lost)] == zero_extensions(expected, abs_send_time)


def test_fec_for_frames_a_viewer_did_not_send_is_not_sent():
    from rpistream.stream.fec_groups import FecGrouper

    socket = Socket()
    params = ViewerParameters(**{**PARAMS.__dict__, **FEC_PARAMS["flexfec-03"]})
    viewer, packetizer, _, _ = make_viewer(socket, params=params)
    sent, unseen = frames(packetizer, 2, keyframe_every=1)
    viewer.offer(sent)
    grouper = FecGrouper("flexfec-03", max_frames=1)
    (group,) = grouper.add(unseen, 0.5)[1]
    viewer.offer_fec(group)
    assert viewer.fec_groups_skipped == 1 and viewer.fec_packets_sent == 0
    (group,) = grouper.add(sent, 0.5)[1]
    viewer.offer_fec(group)
    assert viewer.fec_packets_sent == len(group.payloads) > 0
