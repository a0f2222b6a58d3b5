"""SegmentWriter: a camera's encoded frames into playable files of a set length.

Used on the recorder's writer thread only (one per camera), never on the
event loop: muxing, writing and fsync block. The frames are the camera's
own access units, muxed as they are, never re-encoded: H.264 (Annex-B, SPS
and PPS before every IDR) into fragmented MP4, VP8 into WebM, with PyAV.

Segments. A segment starts on a keyframe; frames before the first keyframe
(and after `gap()`, until the next keyframe) are not written, only counted
in `frames_skipped`. A new segment starts at the first keyframe at or after
`segment_seconds` of the current one, or at any keyframe whose H.264
parameter sets (SPS, PPS) or VP8 picture size differ from the segment's:
one file never mixes two stream configurations. `write()` returns the path
of the segment that frame completed, else None.

Time. A frame's timestamp is its capture time (time.monotonic_ns(), as the
sources give it) minus that of its segment's first frame, on a 90 kHz clock
(the RTP video clock of RFC 6184 §8.2.1 and RFC 7741 §6.1; the MP4 track's
timescale; WebM keeps milliseconds). Each frame's duration is the time until
the next frame's capture, so the writer holds back one frame until the next
arrives; the last frame of a segment ended by close() lasts as long as the
frame before it (0 if the writer saw only one frame). A segment's duration, the sum of its frames', is in its
name (rpistream/record/names.py) with its wall-clock start:
time.time_ns() - (time.monotonic_ns() - capture_ns) at its first frame.

Fragments. MP4 is written fragmented (movflags frag_keyframe, empty_moov,
default_base_moof: ISO/IEC 14496-12 §8.8): a moov with no samples, then a
moof+mdat per fragment, a fragment per keyframe, so a file cut anywhere
plays up to its last complete fragment. WebM (Matroska) is written the same
way by nature: a Cluster at a time, a new one at each keyframe (FFmpeg's
matroska muxer also ends one after 5 s). FFmpeg's
muxers hold the fragment or cluster being built in memory and write it
whole when it ends; `frag_size` and `cluster_size_limit` end one early at
`flush_bytes`, which bounds that memory too. With `flush_packets` the
muxer's I/O buffer is emptied into the sink after every packet, so when
mux() returns having written anything, what it wrote ends where a fragment
or cluster ends: the writer then hands the sink's bytes to the OS in one
write (rpistream/record/sink.py). Memory of its own: the sink's buffer (at
most `flush_bytes`) and the frame held back; FFmpeg's: the fragment or
cluster being built (at most `flush_bytes` and a frame) and PyAV's I/O
buffer (32 KiB).

Crash safety. A segment is written as ``<start>.<ext>.partial``. When it is
complete the muxer writes its index (MP4: mfra; WebM: Cues, Duration), the
file is fsync'ed, renamed to its final name (os.replace, atomic), and the
directory fsync'ed. A crash leaves the .partial: recover()
(rpistream/record/recover.py) makes it playable up to its last complete
fragment or cluster at the next start. A crash loses the fragment or
cluster being built (a keyframe interval, at most `flush_bytes`) and the
frame held back; a power cut also what the OS had not yet written back.

Errors. Any exception while writing or completing a segment (OSError from
the disk: ENOSPC, EIO; an FFmpeg error) abandons that segment and then
propagates to the caller: what reached the .partial file stays there,
fsync'ed if the disk allows, for recover() (the recorder may call it on
this thread right away: the failed writer holds no file); a .partial the
failure left empty is removed. Segments completed before stay intact. The
writer itself stays usable: the next write() waits for a keyframe and
starts a new segment, so a recorder can retry once it has freed space
(rpistream/record/retention.py).
"""

from __future__ import annotations

import io
import os
import struct
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from rpistream.core import h264
from rpistream.record import names
from rpistream.record.sink import SegmentSink, WriteStats, fsync_directory

# RFC 6184 §8.2.1 / RFC 7741 §6.1: the video clock; MP4 keeps it as the
# track timescale, so every capture time survives to 11 µs.
CLOCK_HZ = 90_000
TIME_BASE = Fraction(1, CLOCK_HZ)
FORMATS = {"h264": "mp4", "vp8": "webm"}  # codec -> FFmpeg muxer
MP4_FLAGS = "frag_keyframe+empty_moov+default_base_moof"
# 4 MiB: 8 s of 4 Mbit/s video, so at camera bitrates a write ends a
# fragment (one per keyframe interval) long before the buffer fills; the
# largest keyframe of a 1080p camera (~1 MB) fits many times over.
DEFAULT_FLUSH_BYTES = 4 * 1024 * 1024
# PyAV's default I/O buffer: the muxer's bytes reach the sink in writes of
# at most this size (or flush_bytes if smaller, so that no OS write is
# larger than flush_bytes); flush_packets empties it after every packet.
AVIO_BUFFER_BYTES = 32 * 1024
# Prefer PyAV's add_mux_stream() (PyAV >= 18: a stream with no codec context
# at all). Older PyAV (14 in Debian trixie) takes the stream from a template
# demuxed from the first keyframe. A module constant so that the tests run
# both ways on one PyAV.
USE_MUX_STREAM = True


def container_options(fmt: str, flush_bytes: int) -> dict[str, str]:
    """The muxer options that make a segment playable when cut and bound
    the muxer's own buffer (see the module docstring)."""
    options = {"flush_packets": "1"}
    if fmt == "mp4":
        options |= {"movflags": MP4_FLAGS, "frag_size": str(flush_bytes)}
    else:
        options |= {"cluster_size_limit": str(flush_bytes)}
    return options


def parameters(codec: str, keyframe_data) -> bytes:
    """What a decoder must be told before this keyframe: H.264's SPS and PPS
    NAL units (H.264 §7.3.2.1, §7.3.2.2; b"" if the access unit has none),
    VP8's picture size bytes (RFC 6386 §9.1: the 4 bytes after the start code)."""
    if codec == "vp8":
        return bytes(keyframe_data[6:10])
    return b"".join(bytes(keyframe_data[start:end])
                    for start, end in h264.nal_units(keyframe_data)
                    if h264.nal_type(keyframe_data, start) in (h264.NAL_SPS, h264.NAL_PPS))


def _template(codec: str, keyframe, width: int, height: int) -> av.container.InputContainer:
    """An input container holding just the keyframe, whose stream's codec
    parameters (size, H.264 extradata) are the template of the output stream."""
    if codec == "h264":
        return av.open(io.BytesIO(bytes(keyframe)), format="h264")
    # IVF (rpistream/sources/ivf.py): file header, one frame header, the frame.
    header = struct.pack("<4sHH4sHHIII4x", b"DKIF", 0, 32, b"VP80", width, height,
                         CLOCK_HZ, 1, 1)
    frame = struct.pack("<IQ", len(keyframe), 0)
    return av.open(io.BytesIO(header + frame + bytes(keyframe)), format="ivf")


def _add_stream(container, codec: str, keyframe, width: int, height: int):
    if USE_MUX_STREAM and hasattr(container, "add_mux_stream"):
        # PyAV takes H.264's extradata (the avcC) from the first packet's SPS/PPS.
        stream = container.add_mux_stream(codec, width=width, height=height)
    else:
        template = _template(codec, keyframe, width, height)
        try:
            # opaque: the stream gets the template's decoder context, which
            # PyAV < 18 opens before writing the header (cheap, one thread);
            # without it PyAV would open an encoder and take its extradata.
            stream = container.add_stream_from_template(template.streams.video[0],
                                                        opaque=True)
            stream.codec_context.thread_count = 1
        finally:
            template.close()
    try:
        stream.time_base = TIME_BASE
    except RuntimeError:
        pass  # PyAV < 18 refuses it on a decoder's context: the muxer picks 1/90000 itself
    return stream


@dataclass
class _Held:
    """The last frame, waiting for the next one to tell its duration."""

    data: bytes
    pts: int  # in TIME_BASE, from the segment's first frame
    keyframe: bool


class _OpenSegment:
    """One segment being written: its .partial file, sink and muxer."""

    def __init__(self, directory: Path, codec: str, keyframe, capture_ns: int,
                 width: int, height: int, flush_bytes: int, stats: WriteStats):
        self.first_ns = capture_ns
        self.parameters = parameters(codec, keyframe)
        self.ext = names.EXTENSIONS[codec]
        start_ns = time.time_ns() - (time.monotonic_ns() - capture_ns)
        self.stamp = names.stamp(start_ns)
        self.sink = self._create(directory, start_ns, flush_bytes, stats)
        self.path = self.sink.path
        self.frames = 0
        self.end_pts = 0
        self.container = None
        try:
            self.container = av.open(self.sink, "w", format=FORMATS[codec],
                                     options=container_options(FORMATS[codec], flush_bytes),
                                     buffer_size=min(AVIO_BUFFER_BYTES, flush_bytes))
            self.stream = _add_stream(self.container, codec, keyframe, width, height)
        except BaseException:
            self.abandon()
            raise

    def _create(self, directory: Path, start_ns: int, flush_bytes: int,
                stats: WriteStats) -> SegmentSink:
        for duplicate in range(names.MAX_DUPLICATES):
            path = directory / names.partial_name(start_ns, self.ext, duplicate)
            try:
                return SegmentSink(path, flush_bytes, stats)
            except FileExistsError:
                continue  # a leftover not yet recovered, or the clock stepped back
        raise FileExistsError(f"{directory}: {names.MAX_DUPLICATES} .partial files start at "
                              f"{self.stamp}: run recover() on the directory")

    def pts(self, capture_ns: int) -> int:
        # Rounded to the nearest tick: 90,000 / 1e9 = 9 / 100,000.
        return ((capture_ns - self.first_ns) * 9 + 50_000) // 100_000

    def mux(self, data, pts: int, duration: int, keyframe: bool) -> None:
        packet = av.Packet(data)
        packet.stream = self.stream
        packet.time_base = TIME_BASE
        packet.pts = packet.dts = pts
        packet.duration = duration
        packet.is_keyframe = keyframe
        received = self.sink.received
        self.container.mux(packet)
        self.frames += 1
        self.end_pts = pts + duration
        # With flush_packets, bytes from this packet mean the muxer finished
        # a fragment or cluster: hand them to the OS. The first packet's are
        # the file header, which waits for the first fragment (one write).
        if self.sink.received != received and self.frames > 1:
            self.sink.flush()

    def finish(self, directory: Path) -> Path:
        """Index written, file fsync'ed, renamed to its final name, directory fsync'ed."""
        container, self.container = self.container, None
        container.close()  # the last fragment or cluster, and the index
        self.sink.finish()
        duration_ms = (self.end_pts * 1000 + CLOCK_HZ // 2) // CLOCK_HZ
        final = names.free_final_path(directory, self.stamp, duration_ms, self.ext)
        os.replace(self.path, final)
        fsync_directory(directory)
        return final

    def abandon(self) -> None:
        """After a failure: keep what reached the file for recover(); raises nothing."""
        self.sink.abandon()  # from here the muxer's writes go nowhere
        container, self.container = self.container, None
        if container is not None:
            try:
                container.close()
            except Exception:
                pass  # the muxer's own complaint about the failure already raised
        if self.sink.written == 0:
            try:
                os.unlink(self.path)  # nothing to recover: leave no litter
            except OSError:
                pass


class SegmentWriter:
    """Frames of one camera into segment files in `directory` (see the module
    docstring). Not thread-safe: one thread calls everything; the counters
    and `stats` may be read from any thread.

    Counters: `frames_written` (muxed into a segment), `frames_skipped` (not
    written: before a keyframe could start or resume a segment),
    `segments_completed`, `segments_failed` (abandoned after an error, or
    not started for one); `stats` (WriteStats) counts the
    OS writes, their bytes and their latency, and the fsyncs.
    """

    def __init__(self, directory: Path, codec: str, width: int, height: int, *,
                 segment_seconds: float, flush_bytes: int = DEFAULT_FLUSH_BYTES):
        if codec not in FORMATS:
            raise ValueError(f"cannot record codec {codec!r}: choose one of {sorted(FORMATS)}")
        if not segment_seconds > 0:
            raise ValueError(f"segment_seconds must be positive, not {segment_seconds}")
        if flush_bytes <= 0:
            raise ValueError(f"flush_bytes must be positive, not {flush_bytes}")
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"recording directory {directory} does not exist "
                                    f"(or is not a directory): create it first")
        self.directory = directory
        self.codec = codec
        self.width, self.height = width, height
        self.segment_ns = round(segment_seconds * 1e9)
        self.flush_bytes = flush_bytes
        self.stats = WriteStats()
        self.frames_written = 0
        self.frames_skipped = 0
        self.segments_completed = 0
        self.segments_failed = 0
        # The latest completed segment: also known when the write() that
        # completed it then raised while starting the next one.
        self.last_completed: Path | None = None
        self._segment: _OpenSegment | None = None
        self._held: _Held | None = None
        self._waiting = True  # for a keyframe to start or resume a segment
        self._last_duration = 0  # ticks between the last two frames
        self._closed = False

    @property
    def partial_path(self) -> Path | None:
        """The .partial file being written, if a segment is open."""
        segment = self._segment  # once: another thread may be asking
        return segment.path if segment is not None else None

    def write(self, data: bytes, capture_ns: int, keyframe: bool) -> Path | None:
        """Record one access unit (H.264) or frame (VP8) captured at
        `capture_ns` (time.monotonic_ns()). Returns the path of the segment
        this frame completed by starting a new one, else None."""
        if self._closed:
            raise ValueError("SegmentWriter.write() after close()")
        if self._waiting:
            if not keyframe or (self.codec == "h264" and not parameters("h264", data)):
                # An IDR without SPS/PPS cannot start an MP4 (no avcC for it).
                self.frames_skipped += 1
                return None
            self._waiting = False
        completed = None
        try:
            segment = self._segment
            if segment is not None and keyframe and (
                    capture_ns - segment.first_ns >= self.segment_ns
                    or parameters(self.codec, data) not in (b"", segment.parameters)):
                completed = self._complete(max(segment.pts(capture_ns), self._held.pts + 1))
                segment = None
            if segment is None:
                segment = self._segment = _OpenSegment(
                    self.directory, self.codec, data, capture_ns, self.width, self.height,
                    self.flush_bytes, self.stats)
                pts = 0
            else:
                pts = max(segment.pts(capture_ns), self._held.pts + 1)
                self._mux_held(pts)
            self._held = _Held(data, pts, keyframe)
        except BaseException:
            self._fail()
            raise
        return completed

    def gap(self) -> None:
        """Frames were lost before the next write() (a full queue dropped
        them): write nothing until the next keyframe, which continues the
        current segment. The frame held back lasts until then."""
        self._waiting = True

    def close(self) -> Path | None:
        """Complete the current segment and return its path (None if no
        segment was open). The writer takes no more frames."""
        if self._closed:
            return None
        self._closed = True
        if self._segment is None:
            return None
        try:
            return self._complete(self._held.pts + self._last_duration)
        except BaseException:
            self._fail()
            raise

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.close()
        else:
            self._closed = True
            if self._segment is not None:
                self._fail()

    def _mux_held(self, end_pts: int) -> None:
        held = self._held
        self._last_duration = end_pts - held.pts
        self._segment.mux(held.data, held.pts, self._last_duration, held.keyframe)
        self.frames_written += 1

    def _complete(self, end_pts: int) -> Path:
        self._mux_held(end_pts)
        segment, self._segment, self._held = self._segment, None, None
        try:
            path = segment.finish(self.directory)
        except BaseException:
            self._segment = segment  # for _fail() to abandon
            raise
        self.segments_completed += 1
        self.last_completed = path
        return path

    def _fail(self) -> None:
        segment, self._segment, self._held = self._segment, None, None
        self._waiting = True
        self.segments_failed += 1  # abandoned, or could not be started
        if segment is not None:
            segment.abandon()
