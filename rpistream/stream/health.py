"""A camera's health: live, stalled, restarting or failed, judged from the frames it delivers.

One Health per camera, written only by the camera's supervisor on the event
loop (rpistream/stream/camera.py) and read by everything that reports it:
/healthz, /api/cameras, /api/stats, /metrics and the viewer page. Every change
of state is one log line naming the camera, the new state, the cause and when
the next restart is due.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("rpistream.health")

LIVE = "live"  # a usable frame came within the stall timeout
STALLED = "stalled"  # the source runs but no usable frame came within the stall timeout
RESTARTING = "restarting"  # the source is being stopped and started again
FAILED = "failed"  # the source could not start, or its thread ended
STATES = (LIVE, STALLED, RESTARTING, FAILED)

# Restart backoff: the first retry a second after the failure is seen (a camera
# another program let go of, or a file put back, returns at once), doubling to
# at most 30 s, forever: a camera unplugged for a week costs an attempt (a
# libcamera enumeration, milliseconds) and a log line every half minute.
FIRST_RETRY = 1.0
MAX_RETRY = 30.0
# The backoff starts over once a camera has stayed live this long: one that
# dies a few seconds after every start keeps backing off instead of
# restarting every second.
STABLE_AFTER = MAX_RETRY

# The default stall timeout (config `stall_timeout` unset) is the largest of:
# 2 s, well above the pauses a loaded Pi's scheduler, SD card or garbage
# collector put between two frames; 5 frame intervals, for slow cameras; and
# the keyframe interval, because after a restart a viewer waits up to that long
# for its first keyframe anyway, so restarting on a shorter gap cannot bring
# the picture back sooner.
MIN_STALL_TIMEOUT = 2.0
STALL_FRAMES = 5


def default_stall_timeout(fps: float, keyframe_interval: float) -> float:
    return max(MIN_STALL_TIMEOUT, STALL_FRAMES / fps, keyframe_interval)


def backoff(attempt: int) -> float:
    """Seconds before restart number `attempt` (0 for the first) of a run of failures."""
    return min(MAX_RETRY, FIRST_RETRY * 2 ** min(attempt, 16))


class Health:
    """The state, why (when not live), since when, when the next restart is
    due, and counters of stalls, failures, restarts and abandoned threads."""

    def __init__(self, camera: str):
        self.camera = camera
        self.state = RESTARTING  # until the first frame
        self.reason: str | None = "starting"
        self.since = time.time()
        self._since_monotonic = time.monotonic()
        self._live_since: float | None = None  # monotonic
        self._not_live_since: float = self._since_monotonic
        self.retry_at: float | None = None  # monotonic
        self.attempt = 0  # restarts in the current run of failures
        self.stalls = 0
        self.failures = 0
        self.restarts = 0
        self.abandoned_threads = 0

    @property
    def live(self) -> bool:
        return self.state == LIVE

    def not_live_for(self, now: float) -> float:
        """Seconds (monotonic `now`) since the camera was last live; 0 while it is."""
        return 0.0 if self.live else now - self._not_live_since

    def set_live(self) -> None:
        self._change(LIVE, None)
        self.retry_at = None
        self._live_since = time.monotonic()

    def set_restarting(self) -> None:
        self.restarts += 1
        self._change(RESTARTING, self.reason, f"restart {self.restarts}")

    def set_down(self, state: str, reason: str) -> None:
        """Stalled or failed: schedule the next restart with backoff."""
        now = time.monotonic()
        if self._live_since is not None and now - self._live_since >= STABLE_AFTER:
            self.attempt = 0
        self._live_since = None
        wait = backoff(self.attempt)
        self.attempt += 1
        self.retry_at = now + wait
        if state == STALLED:
            self.stalls += 1
        else:
            self.failures += 1
        self._change(state, reason, f"restart in {wait:g} s")

    def abandoned(self) -> None:
        self.abandoned_threads += 1

    def _change(self, state: str, reason: str | None, then: str = "") -> None:
        previous = "starting" if self.reason == "starting" else self.state
        if previous == LIVE and state != LIVE:
            self._not_live_since = time.monotonic()
        self.state, self.reason = state, reason
        self.since, self._since_monotonic = time.time(), time.monotonic()
        cause = f": {reason}" if reason else ""
        log = logger.info if state in (LIVE, RESTARTING) else logger.warning
        log("camera %s: %s -> %s%s%s", self.camera, previous, state, cause,
            f"; {then}" if then else "")

    def info(self) -> dict:
        retry = None if self.retry_at is None else (
            self.since + max(0.0, self.retry_at - self._since_monotonic))
        return {"state": self.state, "reason": self.reason, "since": self.since,
                "next_retry": retry, "stalls": self.stalls, "failures": self.failures,
                "restarts": self.restarts, "abandoned_threads": self.abandoned_threads}
