"""One peer watching one camera: per-viewer RTP writing, NACK/RTX, RTCP, slow-viewer policy."""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from rpistream.core import fec
from rpistream.stream.fec_groups import FecGroup
from rpistream.webrtc.aiortc_internals import ntp_time, rtcp
from rpistream.webrtc.history import PacketHistory

logger = logging.getLogger("rpistream.viewer")

# 1024 packets: about 2.5 s at 4 Mbit/s (~400 packets/s), longer than any
# round trip worth repairing by retransmission. A power of two, so slots stay
# in order across the 16-bit sequence number wrap.
HISTORY_PACKETS = 1024
# Frames whose first sequence number is remembered, to place FEC groups (at
# most 10 frames each, config fec_max_frames) on this viewer's numbering.
SENT_FRAMES_REMEMBERED = 16
# RFC 8285 §4.2 one-byte element header: ID in the high nibble, length - 1 low.
ABS_SEND_TIME_ELEMENT_SIZE = 4
MAX_MID_ELEMENT = 16
SDES_CNAME = 1  # RFC 3550 §6.5.1
# Loss is measured over at least this long: browsers put a report block in
# every RTCP packet, NACKs included (RFC 4585 §3.1), so the fraction lost
# since the previous report often covers a few milliseconds and swings from
# 0 to 100 %.
LOSS_WINDOW = 1.0
# A viewer losing at least this share of its packets over a window is
# counted as behind too: a bottleneck that drops rather than queues (a
# router, a full Wi-Fi link) never backs up our socket, and past half the
# packets lost no repair keeps a picture going.
LOSSY = 0.5

# A viewer's counters that only grow: carried over when a viewer leaves (or a
# forward's viewer is replaced), so that the totals a metrics scrape reports
# (departed viewers + live ones) never go down.
VIEWER_COUNTERS = ("packets_sent", "bytes_on_wire", "frames_sent", "frames_skipped",
                   "skips_to_keyframe", "nacks_received", "packets_retransmitted",
                   "fec_packets_sent", "keyframe_requests")


@dataclass(frozen=True)
class ViewerParameters:
    """What the answer negotiated for this viewer's video stream."""

    payload_type: int
    ssrc: int
    rtx_payload_type: int | None
    rtx_ssrc: int
    mid: str | None
    mid_extension_id: int | None
    abs_send_time_extension_id: int | None
    cname: str
    # FEC (docs/DESIGN.md §6): None, "ulpfec" (every packet RED-wrapped, FEC in the media
    # SSRC's sequence space) or "flexfec-03" (its own SSRC and sequence numbers).
    fec_scheme: str | None = None
    red_payload_type: int | None = None
    rtx_red_payload_type: int | None = None  # RTX with apt=red
    ulpfec_payload_type: int | None = None
    flexfec_payload_type: int | None = None
    flexfec_ssrc: int | None = None


def random_sequence_start() -> int:
    """A sequence number in the lower half of the range, as libwebrtc and aiortc
    do: an early wrap-around can upset SRTP's rollover counter estimate."""
    return secrets.randbelow(32768)


class Viewer:
    """Sends a camera's packet batches to one peer, patching only its header.

    Frames wait in a queue of at most `queue_frames` batches while the
    socket is backed up; when the queue is full the viewer drops it all and
    skips to the next keyframe (and asks for one), because a late frame is
    worth less than a fresh one. A viewer that stays behind for
    `slow_timeout` seconds is disconnected.
    """

    def __init__(self, session_id: str, params: ViewerParameters, *,
                 send: Callable[[bytes], int], header_size: int, ext_room: int,
                 request_keyframe: Callable[[str], None],
                 disconnect: Callable[[str], None],
                 queue_frames: int, slow_timeout: float, answer_nacks: bool = True):
        self.session_id = session_id
        self.params = params
        self._send = send
        self._header_size = header_size
        self._request_keyframe = request_keyframe
        self._disconnect = disconnect
        self._queue: deque = deque()
        self._queue_frames = queue_frames
        self._slow_timeout = slow_timeout
        self._answer_nacks = answer_nacks
        self._next_index = 0  # first unsent packet of the frame at the head of the queue
        self._history = PacketHistory(HISTORY_PACKETS)
        self._seq = random_sequence_start()
        self._rtx_seq = random_sequence_start()
        self._mid_element = self._mid_element_for(params, ext_room)
        self._ext_room = ext_room
        # The elements as FEC computes them: abs-send-time's value zeroed (it
        # is written at send time, after FEC; docs/DESIGN.md §6).
        self._fec_ext = self._mid_element + (
            bytes([params.abs_send_time_extension_id << 4 | 2, 0, 0, 0])
            if params.abs_send_time_extension_id else b"")
        self._sent_frames: deque = deque(maxlen=SENT_FRAMES_REMEMBERED)  # (batch, first seq)
        self._frame_first_seq = 0
        self._fec_seq = random_sequence_start()
        self._waiting_for_keyframe = True
        self._behind_since: float | None = None
        self._closed = False
        self.connected_since = time.time()
        # Counters for stats and sender reports.
        self.packets_sent = 0
        self.octets_sent = 0  # RFC 3550 §6.4.1: payload octets, no headers
        self.bytes_on_wire = 0
        self.frames_sent = 0
        self.frames_skipped = 0
        self.skips_to_keyframe = 0
        self.nacks_received = 0
        self.packets_retransmitted = 0
        self.fec_packets_sent = 0
        self.fec_groups_skipped = 0
        self.keyframe_requests = 0
        # From the viewer's RTCP.
        self.fraction_lost = 0.0
        self.loss = 0.0  # over LOSS_WINDOW: what FEC adapts to
        self._loss_mark: tuple[float, int, int] | None = None  # time, highest seq, lost
        self._lossy_since: float | None = None
        self.packets_lost = 0
        self.jitter = 0
        self.rtt: float | None = None
        self.remb_bitrate: int | None = None
        self.last_rtcp: float | None = None
        self._last_sr_ntp: int | None = None
        self._last_sr_time = 0.0

    @staticmethod
    def _mid_element_for(params: ViewerParameters, ext_room: int) -> bytes:
        """RFC 8843 §15: the mid as a one-byte-header element, if it fits the room."""
        if params.mid_extension_id is None or not params.mid:
            return b""
        mid = params.mid.encode()
        abs_size = ABS_SEND_TIME_ELEMENT_SIZE if params.abs_send_time_extension_id else 0
        if len(mid) > MAX_MID_ELEMENT or 1 + len(mid) + abs_size > ext_room:
            return b""  # the SSRC in the answer identifies the stream just as well
        return bytes([params.mid_extension_id << 4 | (len(mid) - 1)]) + mid

    def _extensions(self) -> bytes:
        """Header-extension elements for the packets sent now."""
        abs_id = self.params.abs_send_time_extension_id
        if abs_id is None:
            return self._mid_element
        # abs-send-time: 24-bit 6.18 fixed-point seconds, the NTP time >> 14.
        value = (ntp_time() >> 14) & 0xFFFFFF
        return self._mid_element + bytes([abs_id << 4 | 2]) + value.to_bytes(3, "big")

    # --- frames in ----------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def state(self) -> str:
        if self._closed:
            return "closed"
        if self._waiting_for_keyframe:
            return "waiting-for-keyframe"
        return "behind" if self._behind_since is not None else "streaming"

    def offer_fec(self, group: FecGroup) -> None:
        """Take FEC for frames already offered: sent after them, if this viewer
        sent every one of them (else it protects nothing this viewer has)."""
        if self._closed or self._waiting_for_keyframe:
            return
        self._queue.append(group)
        self.flush()

    def offer(self, batch) -> None:
        """Take the camera's next frame: queue it and send what the socket takes."""
        if self._closed:
            return
        if self._waiting_for_keyframe:
            if not batch.keyframe:
                self.frames_skipped += 1
                return
            self._waiting_for_keyframe = False
        elif sum(not isinstance(item, FecGroup) for item in self._queue) >= self._queue_frames:
            self._skip_to_keyframe()
            if not batch.keyframe:
                self.frames_skipped += 1
                return
            self._waiting_for_keyframe = False
        self._queue.append(batch)
        self.flush()

    def _skip_to_keyframe(self) -> None:
        self.frames_skipped += sum(not isinstance(item, FecGroup) for item in self._queue)
        self.skips_to_keyframe += 1
        self._queue.clear()
        self._next_index = 0
        self._waiting_for_keyframe = True
        if self._behind_since is None:
            self._behind_since = time.monotonic()
        self.request_keyframe("fell behind")

    def shed(self) -> None:
        """Let go of every queued frame and resume on the next keyframe: what
        the memory watch does to every viewer when memory is critical."""
        if not self._closed:
            self._skip_to_keyframe()

    def restart_stream(self) -> None:
        """The camera starts a new source: drop what is queued and what NACKs
        could ask for, and resume on its first frame, a keyframe. Not a skip:
        this viewer is not behind, and the new encoder starts with a keyframe
        unasked."""
        if self._closed:
            return
        self._queue.clear()
        self._next_index = 0
        self._history.clear()
        self._sent_frames.clear()
        self._waiting_for_keyframe = True

    def behind_for(self, now: float) -> float:
        """Seconds this viewer has been behind (0 if it keeps up), on the monotonic clock."""
        return 0.0 if self._behind_since is None else now - self._behind_since

    def held_batches(self) -> dict:
        """The frame batches this viewer keeps alive, by id: its queue and its NACK history."""
        held = self._history.held()
        for item in self._queue:
            for batch in (item.batches if isinstance(item, FecGroup) else (item,)):
                held[id(batch)] = batch
        return held

    def flush(self) -> None:
        """Send queued packets until the queue is empty or the socket backs up."""
        ext = self._extensions()
        while self._queue:
            item = self._queue[0]
            if isinstance(item, FecGroup):
                self._send_fec(item, ext)
            elif not self._send_frame(item, ext):
                if self._behind_since is None:
                    self._behind_since = time.monotonic()
                return
            self._queue.popleft()
        self._behind_since = None

    def _send_frame(self, batch, ext: bytes) -> bool:
        """Send the rest of `batch`; False if the socket backed up first.
        The per-packet loop is the server's hottest Python: locals only."""
        params = self.params
        send, store, header_size = self._send, self._history.store, self._header_size
        pt, ssrc, seq = params.payload_type, params.ssrc, self._seq
        red_pt = params.red_payload_type if params.fec_scheme == "ulpfec" else None
        if self._next_index == 0:
            self._frame_first_seq = seq
        packets = octets = wire = 0
        try:
            for index in range(self._next_index, len(batch)):
                if red_pt is None:
                    packet = batch.write(index, pt, ssrc, seq, ext)
                else:  # RFC 2198 §3: once ULPFEC is on, every video packet is RED
                    packet = batch.write_red(index, red_pt, pt, ssrc, seq, ext)
                sent = send(packet)
                if not sent:
                    self._next_index = index
                    return False
                store(seq, batch, index)
                seq = (seq + 1) & 0xFFFF
                packets += 1
                octets += len(packet) - header_size
                wire += sent
        finally:
            self._seq = seq
            self.packets_sent += packets
            self.octets_sent += octets
            self.bytes_on_wire += wire
        self._next_index = 0
        self.frames_sent += 1
        self._sent_frames.append((batch, self._frame_first_seq))
        return True

    def _send_fec(self, group: FecGroup, ext: bytes) -> None:
        """The group's FEC packets, numbered on this viewer's sequence: only if
        it sent all the group's frames, one after the other. A backed-up socket
        drops the rest of them: repair data is worth nothing late."""
        sent = {id(batch): seq for batch, seq in self._sent_frames}
        expected = sent.get(id(group.batches[0]))
        if expected is None:
            self.fec_groups_skipped += 1
            return
        sn_base = (expected + group.first) & 0xFFFF
        for batch in group.batches:
            if sent.get(id(batch)) != expected:
                self.fec_groups_skipped += 1
                return
            expected = (expected + len(batch)) & 0xFFFF
        params = self.params
        timestamp = group.batches[-1].timestamp
        for payload in group.payloads:
            if group.scheme == "ulpfec":
                # RFC 5109 §14.2: RED-wrapped, in the media SSRC's sequence space.
                header = fec.rtp_header(params.red_payload_type, self._seq, timestamp,
                                        params.ssrc, ext, self._ext_room)
                packet = payload.write_packet(header, sn_base, params.ssrc, params.payload_type,
                                              self._fec_ext, params.ulpfec_payload_type)
            else:
                header = fec.rtp_header(params.flexfec_payload_type, self._fec_seq, timestamp,
                                        params.flexfec_ssrc, ext, self._ext_room)
                packet = payload.write_packet(header, sn_base, params.ssrc, params.payload_type,
                                              self._fec_ext)
            written = self._send(packet)
            if not written:
                return
            if group.scheme == "ulpfec":
                self._seq = (self._seq + 1) & 0xFFFF
            else:
                self._fec_seq = (self._fec_seq + 1) & 0xFFFF
            self.fec_packets_sent += 1
            self.bytes_on_wire += written

    def request_keyframe(self, reason: str) -> None:
        self.keyframe_requests += 1
        self._request_keyframe(reason)

    def check(self, now: float) -> None:
        """Disconnect a viewer that has been behind, or losing most of what it
        is sent, for longer than the slow-viewer timeout."""
        if self._behind_since is not None and now - self._behind_since > self._slow_timeout:
            self.close(f"behind for more than {self._slow_timeout:g} s "
                       f"({self.frames_skipped} frames skipped)")
        elif self._lossy_since is not None and now - self._lossy_since > self._slow_timeout:
            self.close(f"losing {self.loss:.0%} of its packets for more than "
                       f"{self._slow_timeout:g} s")

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._history.clear()
        logger.info("viewer %s disconnected: %s", self.session_id, reason)
        self._disconnect(reason)

    # --- RTCP -------------------------------------------------------------------

    def send_report(self, rtp_timestamp: int) -> None:
        """RFC 3550 §6.4.1 sender report with true counts, and the SDES CNAME
        that §6.1 requires in every compound packet."""
        if self._closed:
            return
        ntp = ntp_time()
        report = rtcp.RtcpSrPacket(ssrc=self.params.ssrc, sender_info=rtcp.RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=rtp_timestamp,
            packet_count=self.packets_sent & 0xFFFFFFFF,
            octet_count=self.octets_sent & 0xFFFFFFFF))
        sdes = rtcp.RtcpSdesPacket(chunks=[rtcp.RtcpSourceInfo(
            ssrc=self.params.ssrc, items=[(SDES_CNAME, self.params.cname.encode())])])
        if self._send(bytes(report) + bytes(sdes)):
            # RFC 3550 §6.4.1: LSR is the middle 32 bits of the NTP timestamp.
            self._last_sr_ntp = (ntp >> 16) & 0xFFFFFFFF
            self._last_sr_time = time.time()

    async def _handle_rtcp_packet(self, packet) -> None:
        """Called by aiortc's RTCP router for packets about our SSRC."""
        if self._closed:
            return
        self.last_rtcp = time.monotonic()
        if isinstance(packet, (rtcp.RtcpRrPacket, rtcp.RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.params.ssrc:
                    self._receiver_report(report)
        if isinstance(packet, rtcp.RtcpRtpfbPacket) and packet.fmt == rtcp.RTCP_RTPFB_NACK:
            self._nack(packet.lost)
        elif isinstance(packet, rtcp.RtcpPsfbPacket):
            if packet.fmt in (rtcp.RTCP_PSFB_PLI, rtcp.RTCP_PSFB_FIR):
                self.request_keyframe("PLI" if packet.fmt == rtcp.RTCP_PSFB_PLI else "FIR")
            elif packet.fmt == rtcp.RTCP_PSFB_APP:
                try:
                    self.remb_bitrate = rtcp.unpack_remb_fci(packet.fci)[0]
                except ValueError:
                    pass  # an APP feedback message that is not REMB

    def _receiver_report(self, report) -> None:
        self.fraction_lost = report.fraction_lost / 256  # RFC 3550 §6.4.1: 8-bit fixed point
        self.packets_lost = report.packets_lost
        # RFC 3550 §6.4.1: loss over a window from the cumulative counts.
        now = time.monotonic()
        mark = self._loss_mark
        if mark is None:
            self._loss_mark = (now, report.highest_sequence, report.packets_lost)
        elif now - mark[0] >= LOSS_WINDOW:
            expected = report.highest_sequence - mark[1]
            if expected > 0:
                self.loss = min(1.0, max(0.0, (report.packets_lost - mark[2]) / expected))
            self._loss_mark = (now, report.highest_sequence, report.packets_lost)
            if self.loss < LOSSY:
                self._lossy_since = None
            elif self._lossy_since is None:
                self._lossy_since = now
        self.jitter = report.jitter
        if report.lsr and report.lsr == self._last_sr_ntp:
            # RFC 3550 §6.4.1: RTT = arrival - LSR - DLSR (DLSR in 1/65536 s).
            self.rtt = max(0.0, time.time() - self._last_sr_time - report.dlsr / 65536)

    def _nack(self, lost: list[int]) -> None:
        """RFC 4585 §6.2.1 generic NACK: resend what the history still holds,
        as RFC 4588 RTX when negotiated, else the original packet again."""
        self.nacks_received += len(lost)
        if not self._answer_nacks:
            return
        ext = self._extensions()
        params = self.params
        for seq in lost:
            found = self._history.lookup(seq)
            if found is None:
                continue
            batch, index = found
            if params.fec_scheme == "ulpfec" and params.rtx_red_payload_type is not None:
                # The packet went out as RED: RTX with apt=red resends that.
                packet = batch.write_rtx(index, params.rtx_red_payload_type, params.rtx_ssrc,
                                         self._rtx_seq, seq, ext,
                                         red_block_type=params.payload_type)
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            elif params.fec_scheme == "ulpfec":
                # No RTX for RED negotiated: the RED packet again, same number.
                packet = batch.write_red(index, params.red_payload_type, params.payload_type,
                                         params.ssrc, seq, ext)
            elif params.rtx_payload_type is not None:
                packet = batch.write_rtx(index, params.rtx_payload_type, params.rtx_ssrc,
                                         self._rtx_seq, seq, ext)
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            else:
                packet = batch.write(index, params.payload_type, params.ssrc, seq, ext)
            sent = self._send(packet)
            if sent:
                self.packets_retransmitted += 1
                self.bytes_on_wire += sent

    def stats(self) -> dict:
        return {
            "session": self.session_id,
            "state": self.state,
            "payload_type": self.params.payload_type,
            "fec": self.params.fec_scheme or "none",
            "fec_packets_sent": self.fec_packets_sent,
            "queue_depth": len(self._queue),
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_on_wire,
            "frames_sent": self.frames_sent,
            "frames_skipped": self.frames_skipped,
            "skips_to_keyframe": self.skips_to_keyframe,
            "nacks_received": self.nacks_received,
            "packets_retransmitted": self.packets_retransmitted,
            "keyframe_requests": self.keyframe_requests,
            "fraction_lost": self.fraction_lost,
            "loss": round(self.loss, 4),
            "packets_lost": self.packets_lost,
            "jitter": self.jitter,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 1),
            "remb_bitrate": self.remb_bitrate,
            "connected_since": self.connected_since,
            # Memory held for NACKs: references to the camera's shared batches.
            "history_batches": len(history := self._history.held()),
            "history_bytes": sum(batch.nbytes for batch in history.values()),
        }
