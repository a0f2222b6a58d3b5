"""Freeing what a closed peer leaves in reference cycles, soon after it closes.

aiortc's RTCPeerConnection, its transceivers, transports and event-emitter
callbacks refer to one another, so a closed peer is freed by CPython's cycle
collector, not by reference counting. Left to the collector's own schedule, a
full collection runs only once the objects that survived into the oldest
generation have grown by a quarter, so closed peers pile up for minutes (the
gc-tracked objects in bench/soak.py's CSV swing on a cycle of minutes
without this), and the heap grows to hold the pile, which fragmentation then
keeps as RSS (README: Memory over an hour).

`CycleCollector.soon()` is called when a session closes; one full collection
follows, `DELAY` seconds later, for every burst of closes. `freeze_startup()`
moves what start-up created (imported modules, the app, the cameras: most
of the interpreter's objects, alive until exit) out of the collector's reach (gc.freeze), so that
collection costs what the live sessions hold, not the whole interpreter.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

logger = logging.getLogger("rpistream.sessions")

# Seconds from a close to the collection: a burst of hang-ups (a page with
# several cameras closing, a storm of abandoned offers) shares one collection,
# and a peer's last callbacks (pc.close() returns before aiortc's transports
# finish) have run by then.
DELAY = 2.0


def freeze_startup() -> None:
    """Call once, when the process has started everything that lives until exit."""
    gc.collect()
    gc.freeze()


class CycleCollector:
    """Runs gc.collect() once, DELAY seconds after the first of a burst of `soon()`s."""

    def __init__(self, delay: float = DELAY):
        self.delay = delay
        self.collections = 0
        self.collected = 0  # unreachable objects found, in all collections
        self.seconds = 0.0  # time spent collecting, in all collections
        self._timer: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._collect)

    def _collect(self) -> None:
        self._timer = None
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        self.collections += 1
        self.collected += found
        self.seconds += took
        logger.debug("collected %d objects in %.1f ms", found, took * 1000)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
