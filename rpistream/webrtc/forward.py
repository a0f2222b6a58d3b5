"""A camera's packets forwarded to an SFU as plain RTP (RFC 3550), e.g. a
Janus streaming mountpoint, which then fans them out to its own viewers.

The forward is one more viewer of the camera's broadcaster (a Viewer, so
the same immutable batches, packetized once, with the forward's own SSRC
and sequence numbers) whose packets go out on two UDP sockets instead of
SRTP over ICE: RTP to `port`, RTCP to `rtcp_port`. Sender reports go out
every second like any viewer's; the SFU's receiver reports, PLI and FIR
come back to the RTCP socket and reach the camera through the same
keyframe rate limit as viewers' (RFC 4585 §6.3.1). A forward that falls
behind is dropped like a slow viewer, so it never holds the others up, and
starts again after RESTART_S, waiting for a keyframe.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from rpistream.webrtc.aiortc_internals import rtcp
from rpistream.webrtc.viewer import VIEWER_COUNTERS, Viewer, ViewerParameters

logger = logging.getLogger("rpistream.forward")

# After a forward fell behind: long enough for a congested link to drain,
# short enough that the SFU's viewers see a gap of a few seconds at most.
RESTART_S = 2.0


class _RtcpIn(asyncio.DatagramProtocol):
    def __init__(self, forward: RtpForward):
        self.forward = forward

    def datagram_received(self, data: bytes, addr) -> None:
        self.forward._rtcp_received(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on the connected socket: nothing listens there (yet).
        self.forward.rtcp_error = f"RTCP to port {self.forward.config.rtcp}: {exc}"


class RtpForward:
    """One [[camera.forward]] of type "rtp": see the module docstring."""

    def __init__(self, camera, config, *, queue_frames: int, slow_timeout: float):
        self.camera = camera
        self.config = config
        self.target = config.target
        self.name = f"{camera.name} -> {self.target}"
        self._queue_frames = queue_frames
        self._slow_timeout = slow_timeout
        self._ssrc = secrets.randbits(32)
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self.viewer: Viewer | None = None
        self.state = "stopped"
        self.error: str | None = None  # why it last fell behind
        self.rtcp_error: str | None = None  # the last error its RTCP socket got
        self.restarts = 0
        self.rtcp_packets = 0
        # The counters of the viewers it had before a restart, so that its
        # totals never go down.
        self._departed = dict.fromkeys(VIEWER_COUNTERS, 0)

    async def start(self) -> None:
        """Open the sockets and join the broadcaster. A network the SFU cannot
        be reached on yet (no route: the forward is set up before the link,
        at boot) is not the server's failure: said once, tried again every
        RESTART_S until it works or the server stops."""
        loop = asyncio.get_running_loop()
        config = self.config
        try:
            self._rtp, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=(config.host, config.port))
            self._rtcp, _ = await loop.create_datagram_endpoint(
                lambda: _RtcpIn(self), remote_addr=(config.host, config.rtcp))
        except OSError as exc:
            self._close_sockets()
            if self.state != "failed":
                logger.error("forward %s: cannot send to %s (%s); trying again every %g s",
                             self.name, config.host, exc.strerror or exc, RESTART_S)
            self.state, self.error = "failed", f"cannot send to {config.host}: {exc.strerror or exc}"
            self._restart = loop.call_later(RESTART_S, self._retry)
            return
        self._attach()
        logger.info("forward %s: started (payload type %d, SSRC %08x, RTCP on port %d)",
                    self.name, config.payload_type, self._ssrc, config.rtcp)

    def _retry(self) -> None:
        self._restart = None
        task = asyncio.ensure_future(self.start())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_sockets(self) -> None:
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self._rtp = self._rtcp = None

    def _attach(self) -> None:
        """A fresh Viewer on the broadcaster: it waits for (and asks for) a keyframe."""
        camera = self.camera
        params = ViewerParameters(
            payload_type=self.config.payload_type, ssrc=self._ssrc, rtx_payload_type=None,
            rtx_ssrc=0, mid=None, mid_extension_id=None, abs_send_time_extension_id=None,
            cname=f"rpistream-{camera.name}")
        self.viewer = Viewer(
            f"forward:{camera.name}:{self.config.host}:{self.config.port}", params,
            send=self._send, header_size=camera.rtp_header_size, ext_room=camera.ext_room,
            request_keyframe=camera.broadcaster.request_keyframe, disconnect=self._fell_behind,
            queue_frames=self._queue_frames, slow_timeout=self._slow_timeout,
            answer_nacks=False)  # no RTX negotiated with an RTP mountpoint
        camera.broadcaster.add_viewer(self.viewer)
        self.state = "forwarding"

    def _send(self, packet: bytes) -> int:
        # RFC 5761 §4: a second byte of 192-223 (RTCP packet types) is RTCP.
        transport = self._rtcp if 192 <= packet[1] <= 223 else self._rtp
        if transport is None or transport.is_closing() or transport.get_write_buffer_size():
            return 0
        transport.sendto(packet)
        return len(packet)

    def _rtcp_received(self, data: bytes) -> None:
        viewer = self.viewer
        try:
            packets = rtcp.RtcpPacket.parse(data)
        except ValueError:
            return  # not RTCP: nothing we asked for
        self.rtcp_packets += len(packets)
        if viewer is None:
            return
        for packet in packets:
            task = asyncio.ensure_future(viewer._handle_rtcp_packet(packet))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _fell_behind(self, reason: str) -> None:
        """The viewer closed itself (slow): off the broadcaster, back after RESTART_S."""
        self.camera.broadcaster.remove_viewer(self.viewer.session_id)
        for key in VIEWER_COUNTERS:
            self._departed[key] += getattr(self.viewer, key)
        self.viewer = None
        if self.state == "stopped":
            return
        self.state = "behind"
        self.error = reason
        logger.warning("forward %s: %s; starting again in %g s", self.name, reason, RESTART_S)
        self._restart = asyncio.get_running_loop().call_later(RESTART_S, self._restarted)

    def _restarted(self) -> None:
        self._restart = None
        self.restarts += 1
        self._attach()

    async def stop(self) -> None:
        self.state = "stopped"
        if self._restart is not None:
            self._restart.cancel()
        if self.viewer is not None:
            self.viewer.close("server shutting down")  # -> _fell_behind, which lets it go
        self._close_sockets()
        for task in self._tasks:
            task.cancel()

    def stats(self) -> dict:
        viewer = self.viewer
        totals = {key: self._departed[key] + (getattr(viewer, key) if viewer else 0)
                  for key in VIEWER_COUNTERS}
        return {**(viewer.stats() if viewer is not None else {}),
                "camera": self.camera.name, "type": "rtp", "target": self.target,
                "state": self.state, "error": self.error, "rtcp_error": self.rtcp_error,
                "restarts": self.restarts, "rtcp_packets_received": self.rtcp_packets,
                "totals": totals}
