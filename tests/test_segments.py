"""Recording to segment files (rpistream/record/): SegmentWriter, recover(),
list_segments() and enforce_retention(), on real encoded frames.

The frames are the test pattern's (rpistream/sources/testpattern.py): each
carries its frame number in a block code, read back from the pixels PyAV
decodes out of the files, so a test knows exactly which frames a segment
holds. Files are checked by opening them with PyAV, and by second readers
where installed: GStreamer (its own MP4 and Matroska demuxers, which the
test command installs) and ffprobe.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from disks import small_tmpfs
from rpistream.record import (SegmentWriter, enforce_retention, list_segments, names, recover,
                              segments)
from rpistream.sources import blockcode
from rpistream.sources.picture import MovingPicture
from rpistream.sources.testpattern import open_encoder

FPS = 30
WIDTH, HEIGHT = 320, 240
GOP = 15  # frames between keyframes: 0.5 s
FFPROBE = shutil.which("ffprobe")
GST_LAUNCH = shutil.which("gst-launch-1.0")
GST_DECODE = {".mp4": "qtdemux ! h264parse ! avdec_h264", ".webm": "matroskademux ! vp8dec"}


def capture_ns(base: int, index: int) -> int:
    """Capture time of frame `index` at exactly FPS (integer ns: frame 30 is 1 s)."""
    return base + index * 1_000_000_000 // FPS


MOST_FRAMES = 70  # the longest run a test writes: encoded once per codec and size


def frames(codec: str, count: int, width: int = WIDTH, height: int = HEIGHT,
           first: int = 0) -> tuple[tuple[bytes, bool], ...]:
    """(data, keyframe) of `count` test-pattern frames numbered from `first`,
    a keyframe (IDR) exactly every GOP frames, as the test pattern encodes them."""
    assert count <= MOST_FRAMES
    return _encoded(codec, width, height, first)[:count]


@functools.cache
def _encoded(codec: str, width: int, height: int, first: int) -> tuple[tuple[bytes, bool], ...]:
    encoder = open_encoder(codec, width, height, FPS, 600_000, keyframe_interval=GOP / FPS)
    moving = MovingPicture(width, height)
    buffer = np.empty((height * 3 // 2, width), dtype=np.uint8)
    y, u, v = moving.planes(buffer)
    out = []
    for i in range(MOST_FRAMES):
        moving.draw(buffer, first + i)
        blockcode.draw(y, u, v, first + i, first + i)
        picture = av.VideoFrame.from_ndarray(buffer, format="yuv420p")
        picture.pts = i * 3000
        picture.pict_type = PictureType.I if i % GOP == 0 else PictureType.NONE
        out += [(bytes(packet), packet.is_keyframe) for packet in encoder.encode(picture)]
    out += [(bytes(packet), packet.is_keyframe) for packet in encoder.encode(None)]
    assert [key for _, key in out] == [i % GOP == 0 for i in range(MOST_FRAMES)], \
        "the encoder put keyframes elsewhere than every GOP frames"
    return tuple(out)


@dataclass
class Played:
    numbers: list[int]  # block-code frame numbers of the decoded pictures, in order
    packets: int
    first_is_keyframe: bool
    span: float  # first pts to the end of the last packet, seconds
    duration: float | None  # the container's own duration, seconds


def play(path: Path) -> Played:
    """Demux and decode `path` with PyAV, every frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        numbers, packets, first_key, first, end = [], 0, None, None, 0
        pictures = []
        for packet in container.demux(stream):
            if packet.size:
                packets += 1
                first_key = packet.is_keyframe if first_key is None else first_key
                first = packet.pts if first is None else first
                end = max(end, packet.pts + (packet.duration or 0))
            pictures += stream.codec_context.decode(packet)
        for picture in pictures:
            code = blockcode.read(picture.to_ndarray(format="gray"))
            numbers.append(None if code is None else code[0])
        duration = container.duration / 1e6 if container.duration else None
        return Played(numbers, packets, bool(first_key), float((end - first) * stream.time_base)
                      if packets else 0.0, duration)


def gstreamer_numbers(path: Path, scratch: Path) -> list[int] | None:
    """Block-code frame numbers of every picture GStreamer decodes from
    `path`, None without gst-launch-1.0. `scratch`: a file for the pictures."""
    if GST_LAUNCH is None:
        return None
    pipeline = (f"filesrc location={path} ! {GST_DECODE[path.suffix]} ! "
                f"video/x-raw,format=I420 ! filesink location={scratch}")
    result = subprocess.run([GST_LAUNCH, "-q", *pipeline.split()], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pictures = np.fromfile(scratch, dtype=np.uint8).reshape(-1, HEIGHT * 3 // 2, WIDTH)
    scratch.unlink()
    return [None if (code := blockcode.read(y[:HEIGHT])) is None else code[0]
            for y in pictures]


def ffprobe(path: Path) -> tuple[int, float]:
    """(video packets, duration in seconds) as ffprobe reads them."""
    result = subprocess.run(
        [FFPROBE, "-v", "error", "-select_streams", "v:0", "-count_packets",
         "-show_entries", "stream=nb_read_packets:format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30, check=True)
    info = json.loads(result.stdout)
    return int(info["streams"][0]["nb_read_packets"]), float(info["format"]["duration"])


def record(directory: Path, codec: str, data,
           **options) -> tuple[SegmentWriter, list[tuple[int, Path]]]:
    """Write `data` (from frames()), captured a minute ago, through a new
    SegmentWriter and close it: the writer and [(index of the frame that
    completed a segment, or len(data) for close(), segment path)]."""
    base = time.monotonic_ns() - 60 * 10**9
    writer = SegmentWriter(directory, codec, WIDTH, HEIGHT, **options)
    completed = []
    for i, (frame, key) in enumerate(data):
        path = writer.write(frame, capture_ns(base, i), key)
        if path is not None:
            completed.append((i, path))
    last = writer.close()
    if last is not None:
        completed.append((len(data), last))
    return writer, completed


def partials(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.partial"))


# -- SegmentWriter -------------------------------------------------------------------


@pytest.mark.parametrize("mux_stream", [True, False], ids=["add_mux_stream", "template"])
@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_segments_rotate_on_keyframes_at_their_length(tmp_path, monkeypatch, codec, mux_stream):
    """0.9 s segments of 30 fps with a keyframe every 15 frames: a segment
    ends at the first keyframe at or after 0.9 s, frame 30 (1.0 s), so 70
    frames make segments of 30, 30 and 10 frames, each a playable file
    whose name, frame count and duration agree."""
    monkeypatch.setattr(segments, "USE_MUX_STREAM", mux_stream)
    data = frames(codec, 70)
    writer, completed = record(tmp_path, codec, data, segment_seconds=0.9)

    assert [i for i, _ in completed] == [30, 60, 70]
    assert [s.path for s in list_segments(tmp_path)] == [p for _, p in completed]
    assert partials(tmp_path) == []
    assert (writer.frames_written, writer.frames_skipped) == (70, 0)
    assert (writer.segments_completed, writer.segments_failed) == (3, 0)
    listed = list_segments(tmp_path)
    ext = names.EXTENSIONS[codec]
    assert all(s.path.suffix == f".{ext}" for s in listed)
    assert [round(s.duration * 1000) for s in listed] == [1000, 1000, 333]
    for k, segment in enumerate(listed):
        # The wall-clock start follows the capture clock: 1 s apart.
        assert abs(segment.start - listed[0].start - k) < 0.005
        assert segment.size == segment.path.stat().st_size
        played = play(segment.path)
        expected = list(range(30 * k, min(30 * k + 30, 70)))
        assert played.numbers == expected
        assert played.packets == len(expected) and played.first_is_keyframe
        # Duration within a frame: the container's (WebM: Info's Duration;
        # MP4: the fragments' sample durations) and the name's.
        assert abs(played.duration - len(expected) / FPS) < 1 / FPS
        assert abs(played.duration - segment.duration) < 1 / FPS
        if codec == "h264":  # every MP4 sample keeps its duration: exact
            assert played.span == pytest.approx(len(expected) / FPS, abs=1e-4)
        assert gstreamer_numbers(segment.path, tmp_path / "gst.yuv") in (None, expected)
        if FFPROBE:
            packets, duration = ffprobe(segment.path)
            assert packets == len(expected)
            assert abs(duration - len(expected) / FPS) < 1 / FPS


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_nothing_before_the_first_keyframe_and_after_a_gap_until_the_next(tmp_path, codec):
    data = frames(codec, 50)
    base = time.monotonic_ns() - 60 * 10**9
    writer = SegmentWriter(tmp_path, codec, WIDTH, HEIGHT, segment_seconds=60)
    for i in range(5, 50):  # starts mid-GOP: 5..14 wait for keyframe 15
        if i == 37:
            writer.gap()  # frames lost: 37..44 wait for keyframe 45
        if i in range(33, 37):
            continue  # the frames the gap() stands for
        assert writer.write(data[i][0], capture_ns(base, i), data[i][1]) is None
        assert (writer.partial_path is None) == (i < 15)
    path = writer.close()
    assert writer.frames_skipped == 10 + 8
    played = play(path)
    assert played.numbers == list(range(15, 33)) + list(range(45, 50))
    # The frame before the gap lasts until the keyframe after it: the
    # segment spans its whole time, 15..49.
    assert abs(played.duration - 35 / FPS) < 1 / FPS
    with pytest.raises(ValueError, match="after close"):
        writer.write(data[45][0], capture_ns(base, 60), True)


def test_new_parameter_sets_start_a_new_segment(tmp_path):
    """A keyframe whose SPS/PPS differ (the camera restarted at another size)
    ends the segment even before its length: a file has one stream configuration."""
    small = frames("h264", 30, 256, 192, first=30)
    data = frames("h264", 30) + small
    writer, completed = record(tmp_path, "h264", data, segment_seconds=60)
    assert [i for i, _ in completed] == [30, 60]
    first, second = (play(p) for _, p in completed)
    assert (first.numbers, second.numbers) == (list(range(30)), list(range(30, 60)))
    with av.open(str(completed[1][1])) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (256, 192)


def test_clear_errors_for_what_cannot_be_recorded(tmp_path):
    with pytest.raises(ValueError, match="cannot record codec 'h265'"):
        SegmentWriter(tmp_path, "h265", WIDTH, HEIGHT, segment_seconds=60)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SegmentWriter(tmp_path / "missing", "h264", WIDTH, HEIGHT, segment_seconds=60)
    with pytest.raises(ValueError, match="segment_seconds must be positive"):
        SegmentWriter(tmp_path, "vp8", WIDTH, HEIGHT, segment_seconds=0)
    with pytest.raises(ValueError, match="flush_bytes must be positive"):
        SegmentWriter(tmp_path, "vp8", WIDTH, HEIGHT, segment_seconds=1, flush_bytes=0)
    assert SegmentWriter(tmp_path, "vp8", WIDTH, HEIGHT, segment_seconds=1).close() is None


def observed_boundaries(directory: Path, codec: str, data, base: int, **options):
    """Record `data` in one segment while watching its .partial after every
    frame: [(file size, frames in it)] each time the file grew, the bytes of
    the .partial just before close(), and the completed segment.

    The writer holds one frame back and the muxer writes a fragment (cluster)
    when the next keyframe arrives; so when the file grows it holds exactly
    the frames before the latest keyframe muxed."""
    writer = SegmentWriter(directory, codec, WIDTH, HEIGHT, segment_seconds=60, **options)
    grown, size = [], 0
    for i, (frame, key) in enumerate(data):
        writer.write(frame, capture_ns(base, i), key)
        now = writer.partial_path.stat().st_size
        if now != size:
            muxed = i  # frames 0 .. i-1
            grown.append((now, max(k for k in range(muxed) if data[k][1])))
            size = now
    snapshot = writer.partial_path.read_bytes()
    return writer, grown, snapshot, writer.close()


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_os_writes_come_per_fragment_not_per_frame(tmp_path, codec):
    data = frames(codec, 70)
    writer, grown, _, path = observed_boundaries(tmp_path, codec, data,
                                                 time.monotonic_ns() - 60 * 10**9)
    keyframes = sum(key for _, key in data)
    # One write per completed fragment (the file header goes with the first),
    # and the last fragment and the index at close(): WebM's muxer then also
    # goes back to fill in its header, a write of its own.
    assert len(grown) == keyframes - 1
    assert writer.stats.writes <= keyframes + 2
    # Every byte once (WebM: its header twice, filled in at the end).
    assert path.stat().st_size <= writer.stats.bytes <= path.stat().st_size + 1024
    assert writer.stats.syncs == 1 and writer.stats.sync_ns_max > 0
    assert 0 < writer.stats.write_ns_max <= writer.stats.write_ns_total
    # The file grew a fragment, one GOP, at a time. That each growth ends
    # exactly where a fragment ends, the test of cuts below relies on and proves.
    assert [frames_in for _, frames_in in grown] == [GOP * k for k in range(1, keyframes)]


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_writes_come_per_flush_bytes_when_fragments_are_larger(tmp_path, codec):
    """A flush_bytes smaller than a fragment: the sink writes when it holds
    flush_bytes and never holds more; the muxer ends fragments (clusters) at
    flush_bytes too, and the file still plays whole."""
    flush = 8 * 1024
    data = frames(codec, 70)
    writer, completed = record(tmp_path, codec, data, segment_seconds=60, flush_bytes=flush)
    (_, path), = completed
    size = path.stat().st_size
    assert writer.stats.buffered_max <= flush
    assert size / flush <= writer.stats.writes <= 3 * size / flush + sum(k for _, k in data)
    assert play(path).numbers == list(range(70))


# -- recover() -----------------------------------------------------------------------


def expected_frames(grown, cut: int) -> int:
    """Frames a .partial cut after `cut` bytes keeps: those of its complete fragments."""
    return max([n for size, n in grown if size <= cut], default=0)


def check_recovered(directory: Path, expected: int, partial_name: str,
                    gstreamer: Path | None = None):
    lines = recover(directory)
    assert len(lines) == 1 and lines[0].startswith(partial_name), lines
    assert partials(directory) == []
    left = list_segments(directory)
    if expected == 0:
        assert left == [] and "removed: nothing playable" in lines[0], lines
        assert list(directory.iterdir()) == []
        return
    assert len(left) == 1 and "recovered as" in lines[0], lines
    played = play(left[0].path)
    assert played.numbers == list(range(expected)), lines
    assert played.first_is_keyframe
    # The name's duration, from what survived: within a frame.
    assert abs(left[0].duration - expected / FPS) < 1 / FPS + 0.001, lines
    if gstreamer is not None:
        assert gstreamer_numbers(left[0].path, gstreamer) in (None, list(range(expected)))
    left[0].path.unlink()


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_a_file_cut_at_any_byte_recovers_its_complete_fragments(tmp_path, codec):
    """Cuts inside the file header, inside the first fragment, at every
    fragment's end and one byte either side, between, at random: each is
    recovered with exactly the frames of its complete fragments, or removed
    when it has none. The cut files are the real .partial of a writer (its
    placeholders unfilled) and, past it, the completed file (its header
    filled in: what a power cut leaves when the muxer's last writes reached
    the disk and earlier ones did not)."""
    data = frames(codec, 50)
    recording, work = tmp_path / "recording", tmp_path / "work"
    recording.mkdir()
    work.mkdir()
    base = time.monotonic_ns() - 60 * 10**9
    _, grown, snapshot, final = observed_boundaries(recording, codec, data, base)
    whole = final.read_bytes()
    boundaries = [size for size, _ in grown]
    cuts = {0, 1, 4, 7, 8, 9, 15, 16, 40, 100, 300, boundaries[0] // 2}
    for size in boundaries + [len(snapshot)]:
        cuts |= {size - 1, size, size + 1}
    for before, after in zip(boundaries, boundaries[1:] + [len(snapshot)]):
        cuts.add((before + after) // 2)
    rng = random.Random(14)
    cuts |= {rng.randrange(len(snapshot)) for _ in range(12)}
    # Past the .partial, in the completed file: inside its last fragment (its
    # frames' bytes alone reach further), and at its end, where the index
    # (mfra, Cues) is cut or not.
    last = sum(len(frame) for frame, _ in data[grown[-1][1]:])
    cuts |= {len(snapshot) + 1, len(snapshot) + last // 2, len(snapshot) + last - 1}
    start = names.stamp(time.time_ns())
    partial = f"{start}.{names.EXTENSIONS[codec]}.partial"
    gstreamer = tmp_path / "gst.yuv"
    for cut in sorted(c for c in cuts if 0 <= c < len(snapshot) + last):
        source = snapshot if cut <= len(snapshot) else whole
        (work / partial).write_bytes(source[:cut])
        # GStreamer reads the files cut where a fragment ends (its time is
        # spent starting up: not at every cut).
        check_recovered(work, expected_frames(grown, cut), partial,
                        gstreamer if cut in boundaries else None)
    for cut in (len(whole) - 1, len(whole)):
        (work / partial).write_bytes(whole[:cut])
        check_recovered(work, len(data), partial, gstreamer)


KILLED_WRITER = """
import os, pickle, signal, sys
from pathlib import Path
from rpistream.record import SegmentWriter
codec, directory, base, kill_at, path = sys.argv[1:6]
data = pickle.loads(Path(path).read_bytes())
writer = SegmentWriter(Path(directory), codec, 320, 240, segment_seconds=60)
for i, (frame, key) in enumerate(data):
    writer.write(frame, int(base) + i * 1_000_000_000 // 30, key)
    if i == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_a_writer_killed_mid_segment_leaves_a_recoverable_file(tmp_path, codec):
    data = frames(codec, 60)
    pickled = tmp_path / "frames.pickle"
    pickled.write_bytes(pickle.dumps(data))
    directory = tmp_path / "recording"
    directory.mkdir()
    kill_at = 2 * GOP + GOP // 2  # mid-GOP: fragments of frames 0..29 are complete
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, codec, str(directory),
         str(time.monotonic_ns() - 60 * 10**9), str(kill_at), str(pickled)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert result.returncode == -9, result.stderr
    (partial,) = partials(directory)
    check_recovered(directory, 2 * GOP, partial, tmp_path / "gst.yuv")


def test_recover_leaves_alone_what_is_not_its_own(tmp_path):
    data = frames("h264", 20)
    writer = SegmentWriter(tmp_path, "h264", WIDTH, HEIGHT, segment_seconds=60)
    base = time.monotonic_ns()
    for i, (frame, key) in enumerate(data):
        writer.write(frame, capture_ns(base, i), key)
    (tmp_path / "notes.partial").write_bytes(b"someone else's")
    held = writer.partial_path.name
    foreign = "notes.partial: left alone: not a name rpistream's recorder gives"
    assert recover(tmp_path) == [f"{held}: left alone: a running writer holds it", foreign]
    assert (tmp_path / held).exists()
    path = writer.close()
    assert play(path).numbers == list(range(20))
    assert recover(tmp_path) == [foreign]


# -- the disk fills up ---------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, mounted for the test (needs root)."""
    with small_tmpfs(tmp_path, "1m") as mount:
        yield mount


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_a_full_disk_raises_and_keeps_what_was_completed(small_disk, codec):
    # Frames of about 10 KB (tests/media.py's random texture): 1 MiB holds
    # two one-second segments and part of a third.
    from media import encode
    data = [(f.data, f.keyframe) for f in
            encode("libx264" if codec == "h264" else "libvpx", 150, GOP, WIDTH, HEIGHT)]
    base = time.monotonic_ns() - 60 * 10**9
    writer = SegmentWriter(small_disk, codec, WIDTH, HEIGHT, segment_seconds=1.0,
                           flush_bytes=64 * 1024)
    completed, failed_at = [], None
    for i, (frame, key) in enumerate(data):
        try:
            path = writer.write(frame, capture_ns(base, i), key)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            failed_at = i
            break
        if path is not None:
            completed.append(path)
    assert failed_at is not None, "the disk did not fill up"
    assert completed, "no segment completed before the disk filled up"
    assert writer.segments_failed == 1 and writer.partial_path is None
    # The completed segments are whole.
    for path in completed:
        with av.open(str(path)) as container:
            assert sum(1 for p in container.demux(video=0) if p.size) == 30
    # The failed segment's .partial (if any of it reached the disk) is recover()'s.
    for line in recover(small_disk):
        assert "recovered as" in line or "removed: nothing playable" in line, line
    assert partials(small_disk) == []
    # Space freed, the same writer goes on at the next keyframe.
    enforce_retention(small_disk, max_age_s=None, max_bytes=0, min_free_bytes=None)
    resume = (failed_at // GOP + 1) * GOP
    for i in range(resume, resume + 2 * GOP):
        assert writer.write(data[i][0], capture_ns(base, i), data[i][1]) is None
    path = writer.close()
    with av.open(str(path)) as container:
        assert sum(1 for p in container.demux(video=0) if p.size) == 2 * GOP


# -- list_segments() and enforce_retention() -----------------------------------------


def make_segment(directory: Path, start: float, duration_ms: int, size: int,
                 ext: str = "mp4", duplicate: int = 0) -> Path:
    """A file named as a segment, `size` bytes: retention reads only names and sizes."""
    path = directory / names.final_name(names.stamp(round(start * 1e9)), duration_ms, ext,
                                        duplicate)
    path.write_bytes(b"\0" * size)
    return path


def test_list_segments_reads_names_only(tmp_path):
    t = 1_780_000_000.0
    later = make_segment(tmp_path, t + 60, 60_000, 30)
    first = make_segment(tmp_path, t, 60_000, 10, "webm")
    same_start = make_segment(tmp_path, t, 59_000, 20, duplicate=1)
    (tmp_path / f"{names.stamp(round(t * 1e9))}.mp4.partial").write_bytes(b"x")
    (tmp_path / "20261203T172819.123Z_60021ms.mkv").write_bytes(b"x")
    (tmp_path / "readme.txt").write_bytes(b"x")
    listed = list_segments(tmp_path)
    assert [s.path for s in listed] == [first, same_start, later]
    assert [(s.start, s.duration, s.size) for s in listed] == [
        (t, 60.0, 10), (t, 59.0, 20), (t + 60, 60.0, 30)]
    assert names.stamp(1_796_318_899_123_456_789) == "20261203T172819.123Z"
    match = names.FINAL_NAME.fullmatch("20261203T172819.123Z_60021ms.mp4")
    assert names._unix_seconds(match) == 1_796_318_899.123


def test_retention_by_age_deletes_the_oldest_first(tmp_path):
    now = 1_780_000_000.0
    old = make_segment(tmp_path, now - 100, 5000, 1)
    older = make_segment(tmp_path, now - 200, 5000, 1)
    recent = make_segment(tmp_path, now - 30, 5000, 1)
    deleted = enforce_retention(tmp_path, max_age_s=50, max_bytes=None, min_free_bytes=None,
                                now=now)
    assert deleted == [older, old]
    assert [s.path for s in list_segments(tmp_path)] == [recent]
    # Age counts from a segment's end: 25 s ago is within 26 s.
    assert enforce_retention(tmp_path, max_age_s=26, max_bytes=None, min_free_bytes=None,
                             now=now) == []


def test_retention_by_bytes_counts_partials_but_never_deletes_them(tmp_path):
    t = 1_780_000_000.0
    paths = [make_segment(tmp_path, t + 60 * k, 60_000, size)
             for k, size in enumerate([100, 200, 300])]
    partial = tmp_path / f"{names.stamp(round((t + 180) * 1e9))}.mp4.partial"
    partial.write_bytes(b"\0" * 50)
    deleted = enforce_retention(tmp_path, max_age_s=None, max_bytes=400, min_free_bytes=None)
    assert deleted == paths[:2]  # 650 -> 550 -> 350
    assert partial.exists() and paths[2].exists()
    # Nothing left to delete but the partial: the limit cannot hold, nothing more goes.
    assert enforce_retention(tmp_path, max_age_s=None, max_bytes=0,
                             min_free_bytes=None) == paths[2:]
    assert partial.exists()
    assert enforce_retention(tmp_path, max_age_s=None, max_bytes=None, min_free_bytes=None) == []


def test_retention_by_free_space(tmp_path, monkeypatch):
    t = 1_780_000_000.0
    paths = [make_segment(tmp_path, t + 60 * k, 60_000, size)
             for k, size in enumerate([100, 200, 300])]
    real_statvfs = os.statvfs

    def statvfs(path):  # a filesystem with 1000 bytes free for us
        stat = real_statvfs(path)
        return os.statvfs_result((stat.f_bsize, 1, stat.f_blocks, 5000, 1000) + tuple(stat)[5:])

    monkeypatch.setattr(os, "statvfs", statvfs)
    deleted = enforce_retention(tmp_path, max_age_s=None, max_bytes=None, min_free_bytes=1250)
    assert deleted == paths[:2]  # 1000 -> 1100 -> 1300
    assert enforce_retention(tmp_path, max_age_s=None, max_bytes=None,
                             min_free_bytes=1000) == []


def test_retention_enforces_all_limits_at_once(tmp_path):
    now = 1_780_000_000.0
    paths = [make_segment(tmp_path, now - 300 + 60 * k, 60_000, 100) for k in range(5)]
    # Age alone would delete 2 (ended 240 s and 180 s ago), bytes alone 3.
    deleted = enforce_retention(tmp_path, max_age_s=150, max_bytes=250, min_free_bytes=None,
                                now=now)
    assert deleted == paths[:3]
