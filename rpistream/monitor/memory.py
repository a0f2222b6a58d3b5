"""The RSS watch: sample, fit the growth, warn, and shed load before the OOM killer does."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import math
import time
from collections import deque
from collections.abc import Callable

import psutil

from rpistream.monitor.holdings import MiB, describe, holdings, live_viewers

logger = logging.getLogger("rpistream.memory")

# A leak is a slope above the threshold sustained over this long. It is also
# what the window of samples covers, and so its bound: the fit needs nothing
# older, and the watch itself must not grow (at the 5 s shortest interval,
# 721 samples of two floats; at the 30 s default, 121).
LEAK_WINDOW = 3600.0
# Back to "ok" only under 95 % of warn_rss_mb: RSS hovering at the threshold
# logs one warning, not one per sample.
HYSTERESIS = 0.95
# Between two disconnects while shedding: a closed peer's memory comes back
# when its close task has run and the collector has met its cycles, a loop
# iteration or two later; 1 s leaves time for that and still sheds 50 viewers
# in under a minute.
SHED_INTERVAL = 1.0
STATES = ("ok", "warn", "critical")


def fit_slope(samples) -> float | None:
    """Least-squares slope of (time s, value) samples, in value per second;
    None with fewer than two distinct times."""
    n = len(samples)
    if n < 2:
        return None
    mean_t = math.fsum(t for t, _ in samples) / n
    mean_v = math.fsum(v for _, v in samples) / n
    var = math.fsum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    return math.fsum((t - mean_t) * (v - mean_v) for t, v in samples) / var


def mb_per_hour(slope: float | None) -> float | None:
    """Bytes per second -> MB (MiB) per hour."""
    return None if slope is None else slope * 3600 / MiB


def process_rss(process: psutil.Process | None = None) -> Callable[[], int]:
    process = process or psutil.Process()
    return lambda: process.memory_info().rss


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): hand freed heap pages back to the kernel, so RSS
    shows what shedding freed. A no-op where the C library has none (musl)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


release_freed_memory = _malloc_trim()


class MemoryWatch:
    """Samples RSS every `sample_interval` seconds from an event-loop timer,
    keeps the last hour of samples, fits their slope, and acts on thresholds:

    - warn: logs the slope and what the process holds, biggest buffers first;
    - critical: sheds load — every viewer drops its queue and skips to the
      next keyframe, then the slowest viewers are disconnected one by one
      (largest queue first, then longest behind) until RSS is back under warn
      or no viewer is left;
    - a slope above `leak_slope_mb_per_h` over a whole hour, in both halves of
      it (a single step, a burst of viewers joining, is steep in one half
      only), is logged once as a suspected leak.

    `read_rss` (bytes) and `clock` (unix seconds) are injectable, so the
    policy is tested without allocating gigabytes or waiting an hour.
    """

    def __init__(self, config, *, cameras: dict, sessions,
                 read_rss: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.time,
                 shed_interval: float = SHED_INTERVAL):
        self.interval = config.sample_interval
        self.warn_bytes = config.warn_rss_mb * MiB
        self.critical_bytes = config.critical_rss_mb * MiB
        self.leak_slope = config.leak_slope_mb_per_h
        self.cameras = cameras
        self.sessions = sessions
        self._process = psutil.Process()
        self.read_rss = read_rss or process_rss(self._process)
        self.clock = clock
        self.shed_interval = shed_interval
        self.samples: deque[tuple[float, int]] = deque(
            maxlen=math.ceil(LEAK_WINDOW / self.interval) + 1)
        self.rss: int | None = None
        self.state = "ok"
        self.leak_suspected = False
        self.viewers_shed = 0  # disconnected by shedding, since start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._shedding: asyncio.TimerHandle | None = None
        self._shed_order: dict[str, tuple] = {}
        self._shed_count = 0
        # Shedding ended with nobody left to disconnect and RSS still critical:
        # not started again (nor logged again) until a viewer is there to shed.
        self._nothing_to_shed = False

    # --- timer ----------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tick()

    def stop(self) -> None:
        for handle in (self._timer, self._shedding):
            if handle is not None:
                handle.cancel()
        self._timer = self._shedding = None
        self._loop = None

    def _tick(self) -> None:
        try:
            self.sample()
        except Exception:  # the watch must outlive any one bad reading
            logger.exception("memory sample failed")
        if self._loop is not None:
            self._timer = self._loop.call_later(self.interval, self._tick)

    # --- figures --------------------------------------------------------------

    def slope(self) -> float | None:
        """RSS growth over the window, MB per hour; None before two samples."""
        return mb_per_hour(fit_slope(self.samples))

    def rss_mb(self) -> float | None:
        return None if self.rss is None else self.rss / MiB

    # --- policy ---------------------------------------------------------------

    def sample(self) -> None:
        """Take one sample and act on it."""
        rss = self.rss = self.read_rss()
        now = self.clock()
        self.samples.append((now, rss))
        slope = self.slope()
        if rss < self.critical_bytes:
            self._nothing_to_shed = False
        if rss >= self.critical_bytes:
            if self.state != "critical":
                self.state = "critical"
                logger.error("memory critical: RSS %.0f MB is at or above critical_rss_mb "
                             "(%.0f MB)%s; shedding load", rss / MiB,
                             self.critical_bytes / MiB, self._slope_text(slope))
            if self._shedding is None and (live_viewers(self.sessions)
                                           or not self._nothing_to_shed):
                self._start_shedding()
        elif self._shedding is not None:
            pass  # shedding goes on until under warn, and says so
        elif rss >= self.warn_bytes:
            if self.state == "ok":
                logger.warning("memory warn: RSS %.0f MB is at or above warn_rss_mb (%.0f MB)"
                               "%s; holding %s", rss / MiB, self.warn_bytes / MiB,
                               self._slope_text(slope), self._describe())
            self.state = "warn"
        elif rss < self.warn_bytes * HYSTERESIS or self.state == "critical":
            if self.state != "ok":
                logger.info("memory back to normal: RSS %.0f MB", rss / MiB)
            self.state = "ok"
        self._check_leak()

    @staticmethod
    def _slope_text(slope: float | None) -> str:
        return "" if slope is None else f", growing {slope:+.1f} MB/h over the last samples"

    def _describe(self) -> str:
        return describe(holdings(self.cameras, self.sessions, self._process))

    def _check_leak(self) -> None:
        samples = list(self.samples)
        if len(samples) < self.samples.maxlen:
            return  # the window does not cover an hour yet
        whole = self.slope()
        if whole is None or whole <= self.leak_slope:
            self.leak_suspected = False  # re-armed: a new leak is logged again
            return
        half = len(samples) // 2
        first = mb_per_hour(fit_slope(samples[:half + 1]))
        second = mb_per_hour(fit_slope(samples[half:]))
        if first <= self.leak_slope or second <= self.leak_slope or self.leak_suspected:
            return
        self.leak_suspected = True
        logger.error("suspected memory leak: RSS grew %.1f MB/h over the last hour "
                     "(%.1f then %.1f MB/h in its halves; leak_slope_mb_per_h is %g) to "
                     "%.0f MB; holding %s. GET /api/debug/tracemalloc ([monitor] "
                     "debug_api = true) twice shows what allocates", whole, first, second,
                     self.leak_slope, samples[-1][1] / MiB, self._describe())

    # --- shedding -------------------------------------------------------------

    def _start_shedding(self) -> None:
        """Critical: every viewer drops its queue and skips to the next keyframe;
        then, if that was not enough, the slowest viewers go one by one."""
        now = time.monotonic()
        viewers = live_viewers(self.sessions)
        # The order is taken before shed() empties the queues it is judged by.
        self._shed_order = {s.id: (v.queue_depth, v.behind_for(now), v.frames_skipped)
                            for s, v in viewers}
        self._shed_count = 0
        queued = sum(v.queue_depth for _, v in viewers)
        for _, viewer in viewers:
            viewer.shed()
        rss = self._reclaim()
        logger.error("memory critical: dropped %d queued frames of %d viewers, all skipping "
                     "to the next keyframe; RSS now %.0f MB", queued, len(viewers), rss / MiB)
        self._shed_step(rss)

    def _shed_step(self, rss: int | None = None) -> None:
        self._shedding = None
        if rss is None:
            rss = self._reclaim()
        viewers = live_viewers(self.sessions)
        if rss < self.warn_bytes or not viewers:
            self._end_shedding(rss, viewers)
            return
        now = time.monotonic()

        def slowness(sv):
            session, viewer = sv
            return self._shed_order.get(session.id) or (
                viewer.queue_depth, viewer.behind_for(now), viewer.frames_skipped)

        session, viewer = max(viewers, key=slowness)
        depth, behind, skipped = slowness((session, viewer))
        viewer.close(f"memory critical (RSS {rss / MiB:.0f} MB, critical_rss_mb "
                     f"{self.critical_bytes / MiB:.0f} MB; the slowest viewer: {depth} frames "
                     f"queued, behind {behind:.1f} s, {skipped} frames skipped)")
        self._shed_count += 1
        self.viewers_shed += 1
        logger.error("memory critical: disconnected viewer %s of camera %s, the slowest "
                     "(%d frames queued, behind %.1f s); RSS %.0f MB, warn at %.0f MB",
                     session.id, session.camera.name, depth, behind, rss / MiB,
                     self.warn_bytes / MiB)
        if self._loop is not None:
            self._shedding = self._loop.call_later(self.shed_interval, self._shed_step)
        else:  # not started (a test driving sample() by hand): go on at once
            self._shed_step()

    def _end_shedding(self, rss: int, viewers: list) -> None:
        if rss < self.warn_bytes:
            logger.warning("memory critical resolved: RSS %.0f MB is under warn_rss_mb "
                           "(%.0f MB) after disconnecting %d viewers", rss / MiB,
                           self.warn_bytes / MiB, self._shed_count)
            self.state = "ok"
        else:
            logger.error("memory still %s with no viewer left to disconnect: RSS %.0f MB "
                         "after disconnecting %d viewers; holding %s",
                         "critical" if rss >= self.critical_bytes else "above warn",
                         rss / MiB, self._shed_count, self._describe())
            self.state = "critical" if rss >= self.critical_bytes else "warn"
        self.rss = rss
        self._shed_order = {}
        self._nothing_to_shed = not viewers and rss >= self.critical_bytes

    def _reclaim(self) -> int:
        """Collect cycles (aiortc's peers have them), hand freed heap back to
        the kernel, and read RSS again."""
        gc.collect()
        release_freed_memory()
        self.rss = self.read_rss()
        return self.rss
