"""All live WHEP sessions: creation within the viewer limits, lookup, and closing them all."""

from __future__ import annotations

import asyncio

from rpistream.webrtc.cycles import CycleCollector
from rpistream.webrtc.ice_servers import session_ice_servers
from rpistream.webrtc.session import PeerSession
from rpistream.webrtc.viewer import VIEWER_COUNTERS



class ViewerLimitReached(Exception):
    """Too many viewers; the message says which limit."""


class SessionRegistry:
    """The one owner of every PeerSession. A session leaves the registry when
    it closes, whatever closed it."""

    def __init__(self, *, ice_servers, limits):
        self._ice_servers = ice_servers  # config IceServer tables
        self._limits = limits
        self.sessions: dict[str, PeerSession] = {}
        self.disconnects: dict[str, int] = {}  # close reason -> count, for stats
        # camera -> VIEWER_COUNTERS summed over the viewers that left it
        self.departed: dict[str, dict[str, int]] = {}
        # A closed session's aiortc objects are freed by the cycle collector.
        self.cycles = CycleCollector()

    def count(self, camera_name: str | None = None) -> int:
        if camera_name is None:
            return len(self.sessions)
        return sum(1 for s in self.sessions.values() if s.camera.name == camera_name)

    def create(self, camera) -> PeerSession:
        limits = self._limits
        if self.count() >= limits.max_viewers:
            raise ViewerLimitReached(
                f"the server has its maximum of {limits.max_viewers} viewers")
        if self.count(camera.name) >= limits.max_viewers_per_camera:
            raise ViewerLimitReached(
                f"camera {camera.name!r} has its maximum of "
                f"{limits.max_viewers_per_camera} viewers")
        session = PeerSession(
            camera, ice_servers=session_ice_servers(self._ice_servers),
            ice_timeout=limits.ice_timeout,
            queue_frames=limits.viewer_queue_frames, slow_timeout=limits.slow_viewer_timeout,
            on_closed=self._closed)
        self.sessions[session.id] = session
        return session

    def get(self, camera_name: str, session_id: str) -> PeerSession | None:
        session = self.sessions.get(session_id)
        if session is None or session.camera.name != camera_name:
            return None
        return session

    def _closed(self, session: PeerSession) -> None:
        if self.sessions.pop(session.id, None) is not None:
            reason = (session.close_reason or "unknown").split(" (")[0]
            self.disconnects[reason] = self.disconnects.get(reason, 0) + 1
            if session.viewer is not None:
                totals = self.departed.setdefault(session.camera.name, {})
                for name in VIEWER_COUNTERS:
                    totals[name] = totals.get(name, 0) + getattr(session.viewer, name)
            self.cycles.soon()

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(s.close(reason) for s in list(self.sessions.values())),
                             return_exceptions=True)
        self.cycles.stop()
