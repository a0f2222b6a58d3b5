"""On-demand allocation diffs with tracemalloc, for hunting a leak on a running server."""

from __future__ import annotations

import time
import tracemalloc

# Allocation sites in a diff: enough to see the culprit, short enough to read.
TOP = 25
# Frames kept per allocation: one (the line that allocated) keeps tracing's
# own memory at its smallest; a leak's site is what is wanted here.
FRAMES = 1
IGNORED = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


class AllocationDiff:
    """The first call starts tracing and takes a snapshot; each later call
    takes another and reports the `top` lines whose allocations grew most
    since the previous call. Tracing then stays on (it slows allocations
    and costs memory) until `stop()`; only started on request, never by
    default."""

    def __init__(self, top: int = TOP):
        self.top = top
        self._previous: tracemalloc.Snapshot | None = None
        self._previous_time = 0.0
        self._started_here = False

    def diff(self) -> dict:
        if not tracemalloc.is_tracing():
            tracemalloc.start(FRAMES)
            self._started_here = True
            self._previous = None
        snapshot = tracemalloc.take_snapshot().filter_traces(IGNORED)
        now = time.time()
        current, peak = tracemalloc.get_traced_memory()
        result = {
            "tracing": True,
            "traced_bytes": current,
            "traced_peak_bytes": peak,
            "tracemalloc_overhead_bytes": tracemalloc.get_tracemalloc_memory(),
            "since": None if self._previous is None else self._previous_time,
            "interval_s": None if self._previous is None else round(now - self._previous_time, 3),
            "top": [],
        }
        if self._previous is None:
            result["note"] = ("tracing started: call again to see what was allocated "
                              "(and not freed) in between")
        else:
            stats = snapshot.compare_to(self._previous, "lineno")
            result["top"] = [{
                "site": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                "size_diff_bytes": s.size_diff, "size_bytes": s.size,
                "count_diff": s.count_diff, "count": s.count,
            } for s in stats[:self.top]]
        self._previous, self._previous_time = snapshot, now
        return result

    def stop(self) -> dict:
        """Stop tracing (if this started it) and drop the snapshot."""
        self._previous = None
        if self._started_here and tracemalloc.is_tracing():
            tracemalloc.stop()
        self._started_here = False
        return {"tracing": tracemalloc.is_tracing(), "top": []}
