"""recover(): make the segments a crash left behind playable, at start-up.

A segment being written is ``<start>.<ext>.partial`` (rpistream/record/names.py).
After a kill -9 or a power cut it may end anywhere: inside the file header,
inside a fragment, inside a box header. Each leftover is cut back (ftruncate,
in place: no copy, and running recover() again after a crash in the middle
does the same thing) to the end of its last complete unit:

- MP4 (ISO/IEC 14496-12): the top-level boxes are walked by their size
  fields (§4.2): ftyp, moov, then moof+mdat pairs (§8.8.4, §8.1.1). The
  file is kept up to the end of the last mdat that follows its moof (or of
  a complete mfra after it: a file whose writer died just before its rename).
- WebM (Matroska, RFC 9559 §4, §5): the EBML header, then the Segment's
  children walked by their EBML sizes: SeekHead, Info, Tracks, Tags, then
  Clusters. The file is kept up to the end of its last complete Cluster (or
  of complete elements after it, such as Cues); a Segment whose size field
  says more than is left is marked as of unknown size (§6.2 of RFC 8794,
  all value bits set), as a live WebM is.

A walk stops at the first unit that goes past the end of the file, or at
bytes that cannot start one (an unknown box type or EBML ID, a size
smaller than its header: the zeros a power cut leaves where blocks were
never written). PyAV then demuxes what is left: its frames and duration
(first timestamp to the end of the last frame) name the recovered file;
the file is fsync'ed, renamed to its final name and the directory
fsync'ed. A leftover with no complete fragment or cluster (or that PyAV
cannot read) is removed.

Limits: the contents of a complete unit are not checked. A power cut can
leave zeros inside a complete mdat or Cluster (a later block reached the
disk before an earlier one); those frames decode as corruption until the
next keyframe. A recovered WebM has no Cues and no Duration (only the
muxer's trailer writes them): it plays from the start, and a browser seeks
in it only within what it has loaded. A recovered MP4 has no mfra, which
players do not need for fragmented files.

Only files this recorder names are touched, and not one a running
SegmentWriter holds (it keeps an exclusive flock on its .partial): call
recover() at start-up, or on a camera's writer thread when its writer has
no segment open (after it raised).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import av

from rpistream.record import names
from rpistream.record.sink import fsync_directory

# ISO/IEC 14496-12 top-level boxes a segment may hold (§4.2 and the boxes'
# own sections); anything else at the top level is not ours, or is garbage.
MP4_TOP_LEVEL = {b"ftyp", b"styp", b"moov", b"moof", b"mdat", b"mfra", b"free", b"skip",
                 b"sidx", b"ssix", b"prft", b"emsg", b"meta", b"uuid", b"wide", b"pdin"}
# Matroska element IDs (RFC 9559 §5.1): the EBML header, the Segment, and the
# Segment's children, with the Void and CRC-32 that may sit anywhere (RFC 8794 §11.3).
EBML_HEADER = 0x1A45DFA3
SEGMENT = 0x18538067
CLUSTER = 0x1F43B675
TRACKS = 0x1654AE6B
SEGMENT_CHILDREN = {0x114D9B74, 0x1549A966, TRACKS, CLUSTER, 0x1C53BB6B, 0x1254C367,
                    0x1043A770, 0x1941A469, 0xEC, 0xBF}
# The longest header either walk reads: an MP4 box with a 64-bit size is 16
# bytes; an EBML ID is at most 4 bytes (RFC 8794 §5) and a size at most 8.
MAX_HEADER_BYTES = 16


@dataclass(frozen=True)
class Layout:
    """What a walk found: keep the first `keep` bytes (0: nothing playable)."""

    keep: int
    units: int  # complete fragments or clusters in them
    stop: str  # why the walk ended where it did, in words
    unknown_size_at: tuple[int, int] | None = None  # WebM: (offset, length) of a
    # Segment size field to set to "unknown" once the file is cut


def mp4_layout(read, size: int) -> Layout:
    """Walk a fragmented MP4's top-level boxes; `read(offset, n)` gives bytes."""
    pos = keep = fragments = 0
    moov = moof = False
    stop = "it ends after a complete box"
    while pos < size:
        head = read(pos, MAX_HEADER_BYTES)
        if len(head) < 8:
            stop = f"cut inside a box header at byte {pos}"
            break
        box_size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if box_size == 1:  # §4.2: the real size follows as 64 bits
            if len(head) < 16:
                stop = f"cut inside a box header at byte {pos}"
                break
            box_size, header = struct.unpack_from(">Q", head, 8)[0], 16
        if kind not in MP4_TOP_LEVEL or box_size < header:
            stop = f"no box at byte {pos} ({head[:8].hex()})"
            break
        end = pos + box_size
        if end > size:
            stop = f"cut inside {kind.decode()} at byte {pos}"
            break
        if kind == b"moov":
            moov = True
        elif kind == b"moof":
            moof = True
        elif kind == b"mdat" and moof:
            fragments += 1
            moof = False
            keep = end
        elif fragments and not moof:
            keep = end  # a complete index (mfra) or padding after the fragments
        pos = end
    if not moov or not fragments:
        return Layout(0, 0, stop if moov else f"no complete moov: {stop}")
    return Layout(keep, fragments, stop)


def _ebml_number(data: bytes, at: int, is_id: bool) -> tuple[int, int, bool] | None:
    """(value, length, all value bits set) of the EBML variable-size number at
    `at` (RFC 8794 §4), or None if `data` ends before it. IDs keep their marker
    bit, as the specifications write them. ValueError if no number starts there."""
    if at >= len(data):
        return None
    first = data[at]
    length = 9 - first.bit_length() if first else 9
    if length > (4 if is_id else 8):
        raise ValueError(f"byte {first:#04x} cannot start an EBML {'ID' if is_id else 'size'}")
    if at + length > len(data):
        return None
    raw = int.from_bytes(data[at:at + length], "big")
    if is_id:
        return raw, length, False
    value = raw & ((1 << (7 * length)) - 1)
    return value, length, value == (1 << (7 * length)) - 1


def _ebml_element(read, pos: int):
    """(id, data offset, data size or None if unknown, size field offset and
    length) of the element at `pos`, None if the file ends inside its header.
    ValueError if no element starts there."""
    head = read(pos, MAX_HEADER_BYTES)
    parsed = _ebml_number(head, 0, True)
    if parsed is None:
        return None
    element, id_length, _ = parsed
    parsed = _ebml_number(head, id_length, False)
    if parsed is None:
        return None
    value, size_length, unknown = parsed
    return (element, pos + id_length + size_length, None if unknown else value,
            pos + id_length, size_length)


def webm_layout(read, size: int) -> Layout:
    """Walk a WebM's EBML header, Segment and the Segment's children."""
    try:
        header = _ebml_element(read, 0)
        if header is None or header[0] != EBML_HEADER or header[2] is None:
            return Layout(0, 0, "no complete EBML header")
        pos = header[1] + header[2]
        segment = _ebml_element(read, pos)
        if segment is None or segment[0] != SEGMENT:
            return Layout(0, 0, f"no Segment at byte {pos}")
    except ValueError as exc:
        return Layout(0, 0, f"not a WebM file: {exc}")
    _, pos, segment_size, size_at, size_length = segment
    end_of_segment = size if segment_size is None else min(size, pos + segment_size)
    keep = clusters = 0
    tracks = False
    stop = "it ends after a complete element"
    while pos < end_of_segment:
        try:
            element = _ebml_element(read, pos)
        except ValueError as exc:
            stop = f"no element at byte {pos} ({exc})"
            break
        if element is None:
            stop = f"cut inside an element header at byte {pos}"
            break
        kind, data_at, data_size = element[:3]
        if kind not in SEGMENT_CHILDREN:
            stop = f"no Segment child at byte {pos} (ID {kind:#x})"
            break
        if data_size is None:
            stop = f"an element of unknown size at byte {pos}"
            break
        end = data_at + data_size
        if end > size:
            stop = f"cut inside {'a Cluster' if kind == CLUSTER else f'element {kind:#x}'} " \
                   f"at byte {pos}"
            break
        if kind == TRACKS:
            tracks = True
        elif kind == CLUSTER:
            clusters += 1
            keep = end
        elif clusters:
            keep = end
        pos = end
    if not tracks or not clusters:
        return Layout(0, 0, stop if tracks else f"no complete Tracks: {stop}")
    shrink = segment_size is not None and keep < size_at + size_length + segment_size
    return Layout(keep, clusters, stop, (size_at, size_length) if shrink else None)


def _measure(path: Path) -> tuple[int, float]:
    """(frames, seconds) PyAV demuxes from `path`: first timestamp to the end
    of the last frame. A WebM block carries no duration unless the muxer
    wrote a BlockGroup for it, so a last frame without one is taken to last
    as long as the interval before it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, first, last, previous, duration = 0, None, None, None, 0
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue  # the demuxer's end-of-stream packet
            frames += 1
            first = packet.pts if first is None else min(first, packet.pts)
            if last is None or packet.pts > last:
                previous, last, duration = last, packet.pts, packet.duration or 0
        if not frames:
            return 0, 0.0
        if not duration and previous is not None:
            duration = last - previous
        return frames, float((last + duration - first) * stream.time_base)


def _remove(path: Path, directory: Path) -> None:
    os.unlink(path)
    fsync_directory(directory)


def _recover_one(path: Path, start: str, ext: str) -> str:
    directory = path.parent
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"{path.name}: left alone: a running writer holds it"
        size = os.fstat(fd).st_size

        def read(offset: int, count: int) -> bytes:
            return os.pread(fd, count, offset)

        layout = (mp4_layout if ext == "mp4" else webm_layout)(read, size)
        unit = "fragment" if ext == "mp4" else "cluster"
        if layout.keep == 0:
            _remove(path, directory)
            return f"{path.name}: removed: nothing playable in {size} bytes ({layout.stop})"
        if layout.keep < size:
            os.ftruncate(fd, layout.keep)
        if layout.unknown_size_at is not None:
            at, length = layout.unknown_size_at
            # RFC 8794 §6.2: a size of `length` bytes with every value bit set.
            # The marker bit and the 7 * length value bits below it all set.
            os.pwrite(fd, ((1 << (7 * length + 1)) - 1).to_bytes(length, "big"), at)
        os.fsync(fd)
        try:
            frames, seconds = _measure(path)
        except (av.error.FFmpegError, IndexError, ValueError) as exc:
            frames, seconds, why = 0, 0.0, f"PyAV cannot read it: {exc}"
        else:
            why = "no frames demux from it"
        if not frames:
            _remove(path, directory)
            return f"{path.name}: removed: nothing playable ({why})"
        final = names.free_final_path(directory, start, round(seconds * 1000), ext)
        os.replace(path, final)
        fsync_directory(directory)
        cut = (f"{size - layout.keep} bytes after them cut ({layout.stop})"
               if layout.keep < size else "nothing cut")
        return (f"{path.name}: recovered as {final.name}: {frames} frames, {seconds:.3f} s "
                f"in {layout.units} complete {unit}s; {cut}")
    finally:
        os.close(fd)


def recover(directory: Path) -> list[str]:
    """Recover every .partial in `directory` (see the module docstring); one
    line per file saying what was done, for the log."""
    directory = Path(directory)
    lines = []
    for path in sorted(directory.glob("*" + names.PARTIAL_SUFFIX)):
        parsed = names.parse_partial(path.name)
        if parsed is None:
            lines.append(f"{path.name}: left alone: not a name rpistream's recorder gives")
            continue
        try:
            lines.append(_recover_one(path, *parsed))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue  # gone meanwhile
            lines.append(f"{path.name}: could not be recovered, left as it is: {exc}")
    return lines
