"""GET /api/stats: the server's live state in one JSON document, for the viewer page's charts."""

from __future__ import annotations

import asyncio
import time

import psutil

from rpistream.monitor.holdings import MiB, live_viewers

# Rates are refreshed at most once a second, whoever asks: several pages
# polling every half second all see the same figures, over a second of data.
RATE_INTERVAL = 1.0


class Rates:
    """Per-second rates of monotonic counters, each over at least `interval`
    seconds (the last rate is returned in between). Only the keys of the last
    refresh are kept, so departed viewers leave nothing behind."""

    def __init__(self, interval: float = RATE_INTERVAL):
        self.interval = interval
        self._marks: dict = {}  # key -> (time, value, rate)
        self._seen: set = set()

    def rate(self, key, value: float, now: float) -> float:
        """Per second; 0.0 at a key's first reading (no interval yet)."""
        self._seen.add(key)
        mark = self._marks.get(key)
        if mark is None:
            self._marks[key] = (now, value, 0.0)
            return 0.0
        since, last, rate = mark
        if now - since >= self.interval:
            rate = max(0.0, (value - last) / (now - since))
            self._marks[key] = (now, value, rate)
        return rate

    def forget_unseen(self) -> None:
        for key in self._marks.keys() - self._seen:
            del self._marks[key]
        self._seen = set()


class ServerStats:
    """Builds the /api/stats document from the owners of each figure."""

    def __init__(self, cameras: dict, sessions, memory, forwards: list = (),
                 process: psutil.Process | None = None):
        self.cameras = cameras
        self.forwards = forwards  # the server's list, filled as forwards start
        self.sessions = sessions
        self.memory = memory
        self.process = process or psutil.Process()
        self.rates = Rates()
        # Not the process's create_time(): psutil needs /proc/stat for it,
        # which the service's ProcSubset=pid hides. The server starts with it.
        self.started = time.monotonic()

    def snapshot(self) -> dict:
        now = time.monotonic()
        rates = self.rates
        with self.process.oneshot():
            cpu = self.process.cpu_times()
            rss = self.process.memory_info().rss
            fds = self.process.num_fds()
        memory = self.memory
        slope = memory.slope()
        process = {
            "rss_mb": round(rss / MiB, 1),
            "rss_slope_mb_per_h": None if slope is None else round(slope, 2),
            "memory_state": memory.state,
            "cpu_percent": round(100 * rates.rate("cpu", cpu.user + cpu.system, now), 1),
            "fds": fds,
            "tasks": len(asyncio.all_tasks()),
            "uptime_s": round(now - self.started, 1),
        }
        cameras = {}
        for name, camera in self.cameras.items():
            b = camera.broadcaster.stats()
            info = camera.info()
            bytes_in = camera.ring.bytes_pushed
            cameras[name] = {
                "frames": b["frames"],
                "keyframes": b["keyframes"],
                "bitrate_bps": round(8 * rates.rate(("camera", name), bytes_in, now)),
                "viewers": b["viewers"],
                "ring": {**b["ring"], "bytes_pushed": bytes_in},
                "fec": b["fec"],
                **{key: info[key] for key in ("error", "health", "recording")},
            }
        viewers = []
        for session, viewer in live_viewers(self.sessions):
            s = viewer.stats()
            viewers.append({
                "session": session.id, "camera": session.camera.name, "state": s["state"],
                "codec": session.camera.config.codec, "fec": s["fec"],
                "queue_depth": s["queue_depth"],
                "bitrate_bps": round(8 * rates.rate(("viewer", session.id), s["bytes_sent"], now)),
                **s})
        rates.forget_unseen()
        return {
            "time": time.time(),
            "process": process,
            "memory": {"samples": [[round(t, 3), round(v / MiB, 1)] for t, v in memory.samples]},
            "cameras": cameras,
            "viewers": viewers,
            "forwards": [forward.stats() for forward in self.forwards],
            "disconnects": dict(self.sessions.disconnects),
            "totals": {"viewers": len(viewers),
                       "bitrate_bps": sum(v["bitrate_bps"] for v in viewers)},
        }
