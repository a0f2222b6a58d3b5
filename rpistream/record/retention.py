"""enforce_retention(): delete the oldest segments until the limits hold.

Three limits, each optional, all enforced together on one directory (one
camera's): no segment older than `max_age_s` (a segment's age is counted
from its end, the newest picture in it, so what is kept covers at least
the last `max_age_s`); at most `max_bytes` of recordings (completed
segments plus the .partial files, which count but are never deleted: one
is the segment being written, the others are recover()'s); at least
`min_free_bytes` free on the filesystem, as os.statvfs tells an
unprivileged process (f_bavail).

Deletion goes oldest first by name (rpistream/record/names.py), one segment
at a time, until all three hold or no completed segment is left. Free space
is read once and then counted up by the sizes deleted, not read again:
some filesystems report freed blocks only after their next commit, and
reading again would delete more than needed.

Limits: ages come from names, names from the wall clock: segments recorded
while the clock was wrong (a Pi before NTP corrects it) look as old as that
clock said.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rpistream.record import names


def free_bytes(directory: Path) -> int:
    """Bytes free for an unprivileged writer on `directory`'s filesystem."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def _partial_bytes(directory: Path) -> int:
    total = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(names.PARTIAL_SUFFIX):
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass  # completed and renamed while we looked
    return total


def enforce_retention(directory: Path, *, max_age_s: float | None, max_bytes: int | None,
                      min_free_bytes: int | None, now: float | None = None) -> list[Path]:
    """Delete the oldest completed segments in `directory` until every limit
    given holds (None: no such limit); return the paths deleted, oldest first.
    `now` (Unix seconds) defaults to time.time()."""
    directory = Path(directory)
    now = time.time() if now is None else now
    segments = names.list_segments(directory)
    used = sum(segment.size for segment in segments)
    if max_bytes is not None:
        used += _partial_bytes(directory)
    free = free_bytes(directory) if min_free_bytes is not None else 0
    deleted = []
    for segment in segments:
        too_old = max_age_s is not None and now - segment.end > max_age_s
        too_big = max_bytes is not None and used > max_bytes
        too_full = min_free_bytes is not None and free < min_free_bytes
        if not (too_old or too_big or too_full):
            break
        try:
            os.unlink(segment.path)
        except FileNotFoundError:
            pass  # deleted by someone else: the space is free all the same
        used -= segment.size
        free += segment.size
        deleted.append(segment.path)
    return deleted
