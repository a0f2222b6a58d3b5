"""The file source: replays an Annex-B .h264 or an .ivf (VP8) file, looped.

The file is memory-mapped and indexed once at construction (so a bad file is
a ValueError before anything starts); frames are then read from it one at a
time (not through the map: a file truncated while mapped kills the process
with SIGBUS) and pushed at the file's own pace: IVF frame timestamps, or the
configured fps for raw H.264, which has none. A file deleted, replaced or
truncated while it plays fails the source, and its camera restarts it, which
indexes the file again once it is back. Each loop starts on the file's first keyframe and continues the pts
where the previous loop ended, so the stream downstream never goes back in time.

A file cannot make keyframes on demand: request_keyframe() is ignored, and a
viewer that needs one waits for the file's next.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from dataclasses import dataclass

import av

from rpistream.core import h264
from rpistream.sources import ivf
from rpistream.sources.base import PTS_HZ, Source, SourceError

log = logging.getLogger("rpistream.sources")

@dataclass(frozen=True)
class _Entry:
    start: int
    end: int
    pts: int  # 90 kHz, from the loop's first frame
    keyframe: bool


class FileSource(Source):
    """Replays `path`, in a loop unless `loop` is false; `fps` paces raw H.264 only.
    `codec` is the one the path's extension names (the config checks that):
    Annex-B H.264, or VP8 in IVF."""

    def __init__(self, ring, *, path: str, codec: str, fps: float, loop: bool = True):
        self.path = path
        self.loop = loop
        data, self._identity = _map_file(path)
        with data:
            if codec == "h264":
                entries, loop_pts, width, height, sps = _index_h264(data, path, fps)
            else:
                entries, loop_pts, width, height, fps = _index_ivf(data, path)
                sps = None
        super().__init__(ring, name=f"file:{os.path.basename(path)}", codec=codec,
                         width=width, height=height, fps=fps,
                         gop=_longest_gop(entries, loop))
        if sps is not None:
            self.profile_level_id = h264.profile_level_id_from_sps(sps)
        self._entries = entries
        self._loop_pts = loop_pts

    def request_keyframe(self) -> None:
        log.debug("source %s: a file cannot make keyframes; the next one in the file "
                  "will serve", self.name)

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceError(f"file {self.path!r} cannot be opened again: {exc.strerror}; "
                              f"put it back") from exc
        try:
            if _identity(os.fstat(fd)) != self._identity:
                raise SourceError(f"file {self.path!r} changed after it was read")
            self._replay(fd)
        finally:
            os.close(fd)

    def _read(self, fd: int, entry: _Entry, buffer: bytearray) -> memoryview:
        """The frame's bytes from the file, into `buffer`; SourceError when the
        file is no longer the one that was indexed."""
        if os.fstat(fd).st_nlink == 0:
            raise SourceError(f"file {self.path!r} was deleted or replaced while it played")
        frame = memoryview(buffer)[:entry.end - entry.start]
        if os.preadv(fd, [frame], entry.start) != len(frame):
            frame.release()
            raise SourceError(f"file {self.path!r} was truncated while it played")
        return frame

    def _replay(self, fd: int) -> None:
        buffer = bytearray(max(entry.end - entry.start for entry in self._entries))
        origin_ns = time.monotonic_ns()
        frame_ns = 1e9 / self.fps
        lap = 0
        while True:
            for entry in self._entries:
                pts = lap * self._loop_pts + entry.pts
                due_ns = origin_ns + round(pts * 1e9 / PTS_HZ)
                now_ns = time.monotonic_ns()
                if now_ns < due_ns:
                    if self._stopping.wait((due_ns - now_ns) / 1e9):
                        return
                elif now_ns - due_ns >= frame_ns:
                    # Behind: frames depend on each other, so none may be
                    # skipped; move the schedule instead of bursting to catch up.
                    origin_ns += now_ns - due_ns
                if self._stopping.is_set():
                    return
                with self._read(fd, entry, buffer) as frame:
                    self._push(frame, time.monotonic_ns(), pts, entry.keyframe)
            if not self.loop:
                log.info("source %s: end of file", self.name)
                return
            lap += 1


def _longest_gop(entries: list[_Entry], loop: bool) -> int:
    """Frames from one keyframe to the next, at most, across the loop's end
    too (entries[0] is a keyframe)."""
    keys = [i for i, entry in enumerate(entries) if entry.keyframe]
    gaps = [later - earlier for earlier, later in zip(keys, keys[1:])]
    if loop:
        gaps.append(len(entries) - keys[-1])
    return max(gaps, default=len(entries))


def _identity(stat: os.stat_result) -> tuple:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _map_file(path: str) -> tuple[mmap.mmap, tuple]:
    """The file mapped, and what identifies this version of it."""
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            if stat.st_size == 0:
                raise ValueError(f"file source path {path!r} is empty")
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), _identity(stat)
    except OSError as exc:
        raise ValueError(f"cannot read file source path {path!r}: {exc.strerror}") from exc


def _from_first_keyframe(units, path):
    """The units from the first keyframe on: every loop must start on one."""
    first = next((i for i, unit in enumerate(units) if unit[2]), None)
    if first is None:
        raise ValueError(f"file {path!r} has no keyframe, so no viewer could ever "
                         f"decode it: record it with keyframes (e.g. an encoder GOP)")
    return units[first:]


def _index_h264(data, path: str, fps: float):
    units = h264.access_units(data)
    if not units:
        raise ValueError(f"file {path!r} is not an Annex-B H.264 stream: "
                         f"no start codes found")
    units = _from_first_keyframe(units, path)
    first = data[units[0][0]:units[0][1]]
    sps = h264.find_sps(first)
    if sps is None:
        raise ValueError(f"file {path!r}: its first keyframe has no SPS, so a viewer "
                         f"cannot start decoding; record with SPS/PPS before every IDR")
    decoder = av.CodecContext.create("h264", "r")
    try:
        pictures = decoder.decode(av.Packet(first))
    except av.error.FFmpegError as exc:
        raise ValueError(f"file {path!r}: its first keyframe does not decode as "
                         f"H.264: {exc}") from exc
    if not pictures:
        pictures = decoder.decode(None)
    if not pictures:
        raise ValueError(f"file {path!r}: its first keyframe does not decode as H.264")
    frame_pts = PTS_HZ / fps
    entries = [_Entry(start, end, round(i * frame_pts), key)
               for i, (start, end, key) in enumerate(units)]
    return entries, round(len(entries) * frame_pts), pictures[0].width, pictures[0].height, sps


def _index_ivf(data, path: str):
    try:
        index = ivf.index(data)
    except ValueError as exc:
        raise ValueError(f"file {path!r}: {exc}") from exc
    if index.fourcc != ivf.VP8_FOURCC:
        raise ValueError(f"file {path!r} holds {index.fourcc.decode(errors='replace')!r}, "
                         f"not VP8 ({ivf.VP8_FOURCC.decode()}): only VP8 is supported")
    units = [(f.offset, f.offset + f.size, f.keyframe, f.pts) for f in index.frames]
    units = _from_first_keyframe(units, path)
    first_pts = units[0][3]
    ticks = PTS_HZ * index.time_base
    entries = [_Entry(start, end, round((pts - first_pts) * ticks), key)
               for start, end, key, pts in units]
    if len(entries) > 1:
        interval = entries[-1].pts / (len(entries) - 1)
    else:
        interval = float(ticks)  # one frame: one time-base unit long
    if interval <= 0:
        raise ValueError(f"file {path!r}: frame timestamps do not increase")
    fps = PTS_HZ / interval
    return entries, round(entries[-1].pts + interval), index.width, index.height, fps
