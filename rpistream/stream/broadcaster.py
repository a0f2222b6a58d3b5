"""One camera's fan-out: drain its ring, packetize each frame once, hand the batch to every viewer."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from rpistream.stream.fec_groups import FecGrouper, adaptive_rate

logger = logging.getLogger("rpistream.broadcaster")

RTP_CLOCK_RATE = 90_000  # RFC 6184 §5.1 / RFC 7741 §4.1: video timestamps are 90 kHz
# RFC 3550 §6.2 scales the report interval with the session size; a sender
# with few receivers reports about every second, as libwebrtc's video does.
REPORT_INTERVAL = 1.0


class Broadcaster:
    """Owns the consumer side of one camera's FrameRing and its viewers.

    Everything runs on the event loop: the ring's eventfd wakes `_drain`, which
    packetizes each frame once and offers the same immutable batch to every
    viewer. A one-second timer sends sender reports and disconnects viewers
    that stayed behind too long: no task per viewer.
    """

    def __init__(self, name: str, ring, request_keyframe, packetizer, *,
                 keyframe_min_interval: float, fec_rate="adaptive", fec_max_frames: int = 1):
        """`request_keyframe()` asks the camera's current source for a keyframe."""
        self.name = name
        self.ring = ring
        self._ask_source_for_keyframe = request_keyframe
        self.packetizer = packetizer
        self.viewers: dict[str, object] = {}
        # Takers of every frame as the source made it, before packetizing (a
        # recorder): offer(data, capture_ns, keyframe), on the loop, never
        # blocking; `data` is valid only during the call.
        self.taps: list = []
        self._keyframe_min_interval = keyframe_min_interval
        self._fec_rate = fec_rate  # "adaptive" or a percentage
        self._fec_max_frames = fec_max_frames
        self._fec: dict[str, FecGrouper] = {}  # scheme -> grouper, while a viewer uses it
        self._last_keyframe_request = -keyframe_min_interval
        # RFC 3550 §5.1: the timestamp starts at a random value. One origin per
        # camera, shared by all its viewers (FEC parity XORs timestamps).
        self._timestamp_origin = secrets.randbits(32)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deferred_keyframe: asyncio.TimerHandle | None = None
        self.frames = 0
        self.keyframes = 0
        self.bytes_in = 0
        self.keyframe_requests = 0
        self.keyframe_requests_suppressed = 0

    def rtp_timestamp(self, monotonic_ns: int) -> int:
        return (self._timestamp_origin + monotonic_ns * RTP_CLOCK_RATE // 1_000_000_000) & 0xFFFFFFFF

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.ring.fileno(), self._drain)
        self._timer = self._loop.call_later(REPORT_INTERVAL, self._tick)

    def stop(self) -> None:
        """Stop reading frames and close every viewer. The source is the owner's to stop."""
        if self._loop is not None:
            self._loop.remove_reader(self.ring.fileno())
            self._loop = None
        for handle in (self._timer, self._deferred_keyframe):
            if handle is not None:
                handle.cancel()
        self._timer = self._deferred_keyframe = None
        for viewer in list(self.viewers.values()):
            viewer.close("server shutting down")
        self.viewers.clear()

    # --- frames -----------------------------------------------------------------

    def _drain(self) -> None:
        ring = self.ring
        while (frame := ring.pop()) is not None:
            for tap in self.taps:
                tap.offer(frame.data, frame.capture_ns, frame.keyframe)
            if not self.viewers:
                # Nobody to send to: a joining viewer waits for a keyframe anyway.
                ring.release()
                self.frames += 1
                continue
            try:
                batch = self.packetizer.packetize(
                    frame.data, self.rtp_timestamp(frame.capture_ns), frame.keyframe)
                self.bytes_in += len(frame.data)
            except ValueError as exc:
                logger.warning("camera %s: dropped a frame the packetizer refused: %s",
                               self.name, exc)
                continue
            finally:
                ring.release()
            self.frames += 1
            self.keyframes += batch.keyframe
            self._fan_out(batch)

    def restart_stream(self) -> None:
        """The camera's source was stopped and a new one starts: send what the
        old one left in the ring, then forget its frames. FEC groups start
        afresh and every viewer waits for the new source's first keyframe, with
        its NACK history cleared, so nothing protects or resends a frame from
        before across the gap. Viewers stay connected: their RTP sequence
        numbers run on, and timestamps keep following the capture clock."""
        self._drain()
        self._fec.clear()
        for viewer in self.viewers.values():
            viewer.restart_stream()

    def _fan_out(self, batch) -> None:
        """The frame to every viewer, with the FEC of each scheme in use
        computed once, around it in the order the groups require."""
        viewers = list(self.viewers.values())
        schemes = {v.params.fec_scheme for v in viewers} - {None}
        for scheme in set(self._fec) - schemes:
            del self._fec[scheme]  # nobody uses it: let go of its frames
        after = []
        for scheme in schemes:
            grouper = self._fec.get(scheme)
            if grouper is None:
                grouper = self._fec[scheme] = FecGrouper(scheme, max_frames=self._fec_max_frames)
            before, later = grouper.add(batch, self.fec_rate(scheme))
            self._offer_fec(before, viewers)
            after += later
        for viewer in viewers:
            try:
                viewer.offer(batch)
            except Exception:  # one viewer's failure must not cost the others this frame
                logger.exception("camera %s: sending to viewer %s failed", self.name,
                                 viewer.session_id)
                viewer.close("failed while sending")
        self._offer_fec(after, viewers)

    @staticmethod
    def _offer_fec(groups, viewers) -> None:
        for group in groups:
            for viewer in viewers:
                if viewer.params.fec_scheme == group.scheme:
                    viewer.offer_fec(group)

    def fec_rate(self, scheme: str) -> float:
        """FEC packets per media packet: fixed, or from the worst loss that the
        scheme's viewers report."""
        if self._fec_rate != "adaptive":
            return self._fec_rate / 100
        losses = [v.loss for v in self.viewers.values() if v.params.fec_scheme == scheme]
        return adaptive_rate(max(losses, default=0.0))

    # --- viewers ------------------------------------------------------------------

    def add_viewer(self, viewer) -> None:
        self.viewers[viewer.session_id] = viewer
        viewer.request_keyframe("new viewer")

    def remove_viewer(self, session_id: str) -> None:
        self.viewers.pop(session_id, None)

    def request_keyframe(self, reason: str) -> bool:
        """Ask the source for a keyframe, at most once per `keyframe_min_interval`
        across all viewers: one keyframe serves every viewer that waits for it.
        A request inside the interval is put off to its end, not dropped: a
        viewer joining just after another would otherwise wait for the next
        scheduled keyframe, up to a whole keyframe interval."""
        now = time.monotonic()
        wait = self._last_keyframe_request + self._keyframe_min_interval - now
        if wait > 0:
            self.keyframe_requests_suppressed += 1
            if self._deferred_keyframe is None and self._loop is not None:
                self._deferred_keyframe = self._loop.call_later(wait, self._deferred_request)
            return False
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        logger.debug("camera %s: keyframe requested (%s)", self.name, reason)
        self._ask_source_for_keyframe()
        return True

    def _deferred_request(self) -> None:
        self._deferred_keyframe = None
        if any(viewer.state == "waiting-for-keyframe" for viewer in self.viewers.values()):
            self.request_keyframe("put off by the rate limit")

    def _tick(self) -> None:
        now = time.monotonic()
        rtp_now = self.rtp_timestamp(time.monotonic_ns())
        for viewer in list(self.viewers.values()):
            viewer.send_report(rtp_now)
            viewer.check(now)
        if self._loop is not None:
            self._timer = self._loop.call_later(REPORT_INTERVAL, self._tick)

    def stats(self) -> dict:
        ring = self.ring
        return {
            "frames": self.frames,
            "keyframes": self.keyframes,
            "bytes_in": self.bytes_in,
            "keyframe_requests": self.keyframe_requests,
            "keyframe_requests_suppressed": self.keyframe_requests_suppressed,
            "viewers": len(self.viewers),
            "fec": {scheme: {"groups": g.groups, "packets": g.fec_packets,
                             "rate": round(self.fec_rate(scheme), 3)}
                    for scheme, g in self._fec.items()},
            "ring": {"capacity": ring.capacity, "used": ring.used, "pushed": ring.pushed,
                     "dropped": ring.dropped, "skipped": ring.skipped,
                     "high_water": ring.high_water},
        }
