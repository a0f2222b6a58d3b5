"""Segment file names: what a recording's name says, so a listing needs no file opened.

A completed segment is named by its wall-clock start (UTC, to the millisecond)
and its duration::

    20261203T172819.123Z_60021ms.mp4      H.264 in fragmented MP4
    20261203T172819.123Z_60021ms.webm     VP8 in WebM

The stamp is ISO 8601's basic format, which sorts as text in time order and
holds no ':' (FAT and exFAT, the usual USB sticks, forbid it). The segment
being written is ``<stamp>Z.<ext>.partial``: its duration is not known until
it ends, and ``.partial`` is what recover() looks for after a crash.

Two segments can claim the same start only when the wall clock steps back
(a Pi has no battery clock: NTP corrects it after boot). The later one then
gets ``-<n>`` before its extension (``..._60021ms-1.mp4``) instead of
replacing the earlier one.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

EXTENSIONS = {"h264": "mp4", "vp8": "webm"}
PARTIAL_SUFFIX = ".partial"
_STAMP = r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z"
_EXT = "(" + "|".join(EXTENSIONS.values()) + ")"
FINAL_NAME = re.compile(_STAMP + r"_(\d+)ms(?:-(\d+))?\." + _EXT)
PARTIAL_NAME = re.compile(_STAMP + r"(?:-(\d+))?\." + _EXT + re.escape(PARTIAL_SUFFIX))
# Names tried for one start before giving up: a clock that steps back onto
# the same millisecond this often is not a clock.
MAX_DUPLICATES = 1000


@dataclass(frozen=True)
class Segment:
    """A completed segment, as its name and size tell."""

    start: float  # wall-clock start, Unix seconds (UTC)
    duration: float  # seconds
    size: int  # bytes on disk
    path: Path

    @property
    def end(self) -> float:
        return self.start + self.duration


def stamp(unix_ns: int) -> str:
    """`unix_ns` (time.time_ns()) as the name's stamp, e.g. 20261203T172819.123Z."""
    ms = unix_ns // 1_000_000
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _unix_seconds(match: re.Match) -> float:
    year, month, day, hour, minute, second, ms = (int(g) for g in match.groups()[:7])
    # timegm is arithmetic (no time zone database, no strptime): a listing of
    # a month of one-minute segments parses 40,000 names.
    return calendar.timegm((year, month, day, hour, minute, second)) + ms / 1000


def partial_name(unix_ns: int, ext: str, duplicate: int = 0) -> str:
    tail = f"-{duplicate}" if duplicate else ""
    return f"{stamp(unix_ns)}{tail}.{ext}{PARTIAL_SUFFIX}"


def final_name(start: str, duration_ms: int, ext: str, duplicate: int = 0) -> str:
    tail = f"-{duplicate}" if duplicate else ""
    return f"{start}_{duration_ms}ms{tail}.{ext}"


def free_final_path(directory: Path, start: str, duration_ms: int, ext: str) -> Path:
    """The first final name for this start and duration that no file has yet.

    One writer per directory (one per camera) is the rule, so nothing else
    can take the name between this look and the rename that follows.
    """
    for duplicate in range(MAX_DUPLICATES):
        path = directory / final_name(start, duration_ms, ext, duplicate)
        if not os.path.lexists(path):
            return path
    raise FileExistsError(f"{directory}: {MAX_DUPLICATES} segments already start at "
                          f"{start}: is the wall clock stuck?")


def parse_partial(name: str) -> tuple[str, str] | None:
    """(stamp, extension) of a .partial name this recorder makes, else None."""
    match = PARTIAL_NAME.fullmatch(name)
    if match is None:
        return None
    return name[:len("20261203T172819.123Z")], match.group(9)


def list_segments(directory: Path) -> list[Segment]:
    """The completed segments in `directory`, oldest first, from their names
    (and sizes from the directory listing: no file is opened).

    Anything else in the directory (.partial files, other files) is not a
    segment and is not listed.
    """
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = FINAL_NAME.fullmatch(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue  # deleted while listing (retention on another thread)
            start = _unix_seconds(match)
            duplicate = int(match.group(9) or 0)
            found.append((start, duplicate, entry.name,
                          Segment(start, int(match.group(8)) / 1000, size, Path(entry.path))))
    found.sort(key=lambda item: item[:3])
    return [segment for *_, segment in found]
