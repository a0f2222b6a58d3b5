"""Recorder (rpistream/record/recorder.py): a camera's frames offered as the
event loop would, through the bounded queue and the writer thread, into
segment files on a real disk: a tmp directory, and a small tmpfs that
fills up.

The frames are the test pattern's (rpistream/sources/testpattern.py), each
carrying its frame number in a block code read back from the pictures PyAV
decodes out of the files, so a test knows exactly which frames a segment
holds. A longer stream repeats whole GOPs of them (each starts on an IDR
or a VP8 keyframe, so the repeat is a valid stream) with capture times
that keep going forward.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from disks import small_tmpfs
from rpistream.record import Recorder, free_bytes, list_segments, names, recorder
from rpistream.sources import blockcode
from rpistream.sources.picture import MovingPicture
from rpistream.sources.testpattern import open_encoder

FPS = 30
WIDTH, HEIGHT = 320, 240
GOP = 15  # frames between keyframes: 0.5 s
ENCODED = 120  # frames encoded per codec; longer streams repeat them by GOPs
LOGGER = "rpistream.record"


@functools.cache
def encoded(codec: str) -> tuple[tuple[bytes, bool], ...]:
    """(data, keyframe) of ENCODED test-pattern frames, a keyframe every GOP."""
    encoder = open_encoder(codec, WIDTH, HEIGHT, FPS, 600_000, keyframe_interval=GOP / FPS)
    moving = MovingPicture(WIDTH, HEIGHT)
    buffer = np.empty((HEIGHT * 3 // 2, WIDTH), dtype=np.uint8)
    y, u, v = moving.planes(buffer)
    out = []
    for i in range(ENCODED):
        moving.draw(buffer, i)
        blockcode.draw(y, u, v, i, i)
        picture = av.VideoFrame.from_ndarray(buffer, format="yuv420p")
        picture.pts = i * 3000
        picture.pict_type = PictureType.I if i % GOP == 0 else PictureType.NONE
        out += [(bytes(p), p.is_keyframe) for p in encoder.encode(picture)]
    out += [(bytes(p), p.is_keyframe) for p in encoder.encode(None)]
    assert [key for _, key in out] == [i % GOP == 0 for i in range(ENCODED)]
    return tuple(out)


def frame(codec: str, index: int) -> tuple[bytes, bool]:
    """Frame `index` of an endless stream: the encoded frames, repeated."""
    return encoded(codec)[index % ENCODED]


class Feed:
    """Offers a camera's frames to a recorder as the event loop does, each
    as a memoryview that is invalid after the call (a bytearray overwritten
    at once, as the ring's slot would be)."""

    def __init__(self, rec: Recorder, codec: str):
        self.rec = rec
        self.codec = codec
        self.base = time.monotonic_ns() - 60 * 10**9  # captured a minute ago
        self.next = 0
        self.accepted: list[int] = []
        self.held_frames_max = self.held_bytes_max = 0
        encoded(codec)  # encoded now, not inside the first (timed) offer

    def capture_ns(self, index: int) -> int:
        """At exactly FPS: frame 30 is 1 s after frame 0 (not 1 s - 10 ns)."""
        return self.base + index * 1_000_000_000 // FPS

    def offer(self) -> bool:
        index = self.next
        self.next += 1
        data, key = frame(self.codec, index)
        slot = bytearray(data)
        taken = self.rec.offer(memoryview(slot), self.capture_ns(index), key)
        slot[:] = b"\xff" * len(slot)  # the ring reuses the slot: a kept view would see this
        if taken:
            self.accepted.append(index)
        self.held_frames_max = max(self.held_frames_max, self.rec.held_frames)
        self.held_bytes_max = max(self.held_bytes_max, self.rec.held_bytes)
        return taken

    def paced(self, count: int, every_s: float) -> None:
        """`count` frames, one every `every_s` of wall time."""
        start = time.monotonic()
        for k in range(count):
            delay = start + k * every_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.offer()

    def as_fast_as_written(self, count: int) -> None:
        """`count` frames, each once the queue has room (no queue drop)."""
        for _ in range(count):
            wait_for(lambda: self.rec.held_frames < self.rec.queue_frames, 5)
            self.offer()


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def play(path: Path) -> tuple[list[int | None], int]:
    """(block-code numbers of the decoded pictures, packets) of `path`,
    every frame demuxed and decoded with PyAV.

    FFmpeg's decoders say nothing when a frame's reference is missing: they
    decode it from whatever picture they hold. The block code is the check:
    such a picture reads as no number (None) or as the wrong one."""
    numbers, packets = [], 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for packet in container.demux(stream):
            packets += bool(packet.size)
            for picture in stream.codec_context.decode(packet):
                code = blockcode.read(picture.to_ndarray(format="gray"))
                numbers.append(None if code is None else code[0])
    return numbers, packets


def record_threads(camera: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"record:{camera}" and t.is_alive()]


def new_recorder(directory: Path, codec: str, camera: str = "cam0", **options) -> Recorder:
    settings = dict(segment_seconds=1.0, max_age_s=None, max_bytes=None, min_free_bytes=None)
    return Recorder(camera, codec, WIDTH, HEIGHT, directory=directory, **(settings | options))


@pytest.fixture
def stopped():
    """Recorders a test makes, stopped even when it fails."""
    made = []
    yield made.append
    for rec in made:
        assert rec.stop(timeout=5.0)


def records(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


# -- frames into segments ----------------------------------------------------------


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_frames_at_30_fps_become_segments_and_stop_completes_the_last(tmp_path, caplog,
                                                                      stopped, codec):
    """1 s segments: a segment ends at the first keyframe at or after 1 s,
    frame 30, so 70 frames make segments of 30, 30 and (completed by
    stop()) 10 frames, each decoding to exactly its frames."""
    caplog.set_level(logging.DEBUG, LOGGER)
    directory = tmp_path / "cam0"  # start() creates it
    rec = new_recorder(directory, codec)
    stopped(rec)
    assert rec.stats()["state"] == "stopped"
    rec.start()
    assert len(record_threads("cam0")) == 1
    feed = Feed(rec, codec)
    feed.paced(40, 1 / FPS)
    assert wait_for(lambda: rec.held_frames == 0, 5)
    running = rec.stats()
    assert running["state"] == "recording" and running["segment"].endswith(".partial")
    feed.paced(30, 1 / FPS)

    assert rec.stop() is True
    assert record_threads("cam0") == []
    assert rec.stop() is True  # idempotent
    assert not rec.offer(b"late", feed.base, True)

    segments = list_segments(directory)
    assert [s.path.suffix for s in segments] == [f".{names.EXTENSIONS[codec]}"] * 3
    assert list(directory.glob("*.partial")) == []
    expected = [list(range(0, 30)), list(range(30, 60)), list(range(60, 70))]
    for segment, numbers in zip(segments, expected):
        assert play(segment.path) == (numbers, len(numbers))
    assert [round(s.duration * FPS) for s in segments] == [30, 30, 10]
    stats = rec.stats()
    assert stats["state"] == "stopped" and stats["reason"] == ""
    assert (stats["segments"], stats["frames_written"], stats["frames_dropped"]) == (3, 70, 0)
    # Every byte on disk, and for WebM the few its trailer writes again in
    # place (the Segment's size, Duration, the SeekHead).
    on_disk = sum(s.size for s in segments)
    assert on_disk <= stats["bytes_written"] <= on_disk + 3 * 1024
    assert stats["last_segment"] == str(segments[-1].path) and stats["segment"] == ""
    assert stats["queue_frames"] == stats["queue_bytes"] == 0
    assert 0 < stats["write_ms_max"] and 0 <= stats["write_ms_last"] <= stats["write_ms_max"]
    assert stats["disk_free_bytes"] > 0
    assert all(isinstance(v, (int, float, str)) for v in stats.values())
    completed = [m for m in records(caplog, logging.DEBUG) if "completed" in m]
    assert len(completed) == 3 and all(m.startswith("recorder cam0: segment ") for m in completed)
    assert records(caplog, logging.ERROR) == [] and records(caplog, logging.WARNING) == []


def test_start_recovers_a_crash_leftover_and_logs_it(tmp_path, caplog, stopped):
    """A segment cut short (as kill -9 leaves one) is made playable by start()."""
    caplog.set_level(logging.INFO, LOGGER)
    rec = new_recorder(tmp_path, "h264")
    stopped(rec)
    rec.start()
    Feed(rec, "h264").as_fast_as_written(40)
    assert rec.stop()
    whole = list_segments(tmp_path)[0].path
    cut = whole.read_bytes()[:whole.stat().st_size * 3 // 4]
    whole.unlink()
    leftover = tmp_path / names.partial_name(time.time_ns(), "mp4")
    leftover.write_bytes(cut)

    again = new_recorder(tmp_path, "h264", camera="cam0-again")
    stopped(again)
    again.start()
    lines = [m for m in records(caplog, logging.INFO) if m.startswith("recorder cam0-again: ")]
    assert len(lines) == 1 and "recovered as" in lines[0], lines
    assert not leftover.exists()
    numbers, packets = play(list_segments(tmp_path)[-1].path)
    assert numbers == list(range(packets)) and packets >= GOP


def test_clear_errors_for_what_cannot_be_recorded(tmp_path):
    with pytest.raises(ValueError, match="camera cam0: cannot record codec 'av1'"):
        new_recorder(tmp_path, "av1")
    with pytest.raises(ValueError, match="queue_frames and queue_bytes must be at least 1"):
        new_recorder(tmp_path, "h264", queue_frames=0)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(OSError, match=f"camera cam0: cannot create the recording directory "
                                      f"{blocked}/cam0"):
        new_recorder(blocked / "cam0", "h264").start()
    rec = new_recorder(tmp_path, "h264")
    rec.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            rec.start()
    finally:
        assert rec.stop()


# -- a full queue ------------------------------------------------------------------


@pytest.mark.parametrize("bound", ["frames", "bytes"])
@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_a_full_queue_drops_to_the_next_keyframe(tmp_path, stopped, codec, bound):
    """Bursts of frames far faster than the writer takes them (the offering
    thread keeps the GIL for its whole switch interval): frames are dropped
    from the first that does not fit to the next keyframe, the writer is
    told, and the one segment holds exactly the frames taken: every run of
    them starts on a keyframe, and every one decodes to its own picture."""
    largest = max(len(data) for data, _ in encoded(codec))
    limits = {"frames": {"queue_frames": 6},
              "bytes": {"queue_frames": 1000, "queue_bytes": 2 * largest}}[bound]
    rec = new_recorder(tmp_path, codec, segment_seconds=3600, **limits)
    stopped(rec)
    rec.start()
    feed = Feed(rec, codec)
    for _ in range(12):
        for _ in range(20):  # a burst: 20 frames in well under a millisecond
            feed.offer()
        time.sleep(0.03)
    assert rec.stop()

    stats = rec.stats()
    assert stats["drops"] >= 1 and stats["frames_dropped_queue"] >= 1
    assert len(feed.accepted) + stats["frames_dropped"] == feed.next == 240
    assert stats["frames_written"] == len(feed.accepted) and stats["frames_skipped"] == 0
    assert feed.held_frames_max <= rec.queue_frames and feed.held_bytes_max <= rec.queue_bytes
    assert stats["queue_frames_max"] <= rec.queue_frames
    assert stats["queue_bytes_max"] <= rec.queue_bytes
    # Each run of frames taken starts on a keyframe: a drop lasts until one.
    runs = [i for k, i in enumerate(feed.accepted) if k == 0 or feed.accepted[k - 1] != i - 1]
    still_dropping = feed.accepted[-1] != feed.next - 1
    assert len(runs) == stats["drops"] + (not still_dropping)
    assert all(i % GOP == 0 for i in runs), runs
    [segment] = list_segments(tmp_path)
    numbers, packets = play(segment.path)
    assert numbers == [i % ENCODED for i in feed.accepted] and packets == len(feed.accepted)


# -- a full disk -------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, mounted for the test (needs root)."""
    with small_tmpfs(tmp_path, "4m") as mount:
        yield mount


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_a_full_disk_pauses_recording_and_it_resumes_by_itself(small_disk, caplog, stopped,
                                                               codec):
    caplog.set_level(logging.DEBUG, LOGGER)
    directory = small_disk / "cam0"
    ballast = small_disk / "ballast"
    # Room for two and a half 4 s segments (the encoded frames once over,
    # ~100 KB each: libvpx's realtime mode makes more or fewer bytes under
    # load): the third fails half way, its fragments or clusters (one a
    # GOP) on the disk until it is full, for recover().
    segment_bytes = sum(len(data) for data, _ in encoded(codec))
    assert ENCODED == 4 * FPS
    ballast.write_bytes(b"\0" * (free_bytes(small_disk) - segment_bytes * 5 // 2))
    rec = new_recorder(directory, codec, segment_seconds=4.0)
    stopped(rec)
    rec.start()
    feed = Feed(rec, codec)

    while rec.state == "recording":
        assert feed.next < 1000, "the disk did not fill up"
        feed.as_fast_as_written(1)
    assert wait_for(lambda: rec.held_frames == 0, 5)
    stats = rec.stats()
    assert stats["state"] == "disk-full" and "No space left on device" in stats["reason"]
    [error] = records(caplog, logging.ERROR)
    assert error.startswith("recorder cam0: disk full writing ")
    assert str(directory) in error and "No space left on device" in error
    assert "streaming continues" in error
    # The failed segment's .partial is recover()'s: made playable up to its
    # last complete fragment, never left behind.
    recovered = [m for m in records(caplog, logging.INFO) if ".partial: " in m]
    assert len(recovered) == 1 and "recovered as" in recovered[0], recovered
    assert list(directory.glob("*.partial")) == []
    before = list_segments(directory)
    assert len(before) == rec.stats()["segments"] + 1 >= 3
    for segment in before:  # completed segments intact, the recovered one playable
        numbers, packets = play(segment.path)
        assert packets >= GOP
        assert numbers == [n % ENCODED for n in range(numbers[0], numbers[0] + packets)]

    # While the disk is full, frames are dropped and counted; nothing piles up.
    dropped = stats["frames_dropped_disk"]
    feed.as_fast_as_written(2 * GOP)
    assert wait_for(lambda: rec.held_frames == 0, 5)
    assert rec.stats()["frames_dropped_disk"] == dropped + 2 * GOP
    assert rec.state == "disk-full"

    # Free space by hand: the recorder resumes on its own at a keyframe after
    # its back-off (RETRY_S), and says so once.
    ballast.unlink()
    before[0].path.unlink()
    started = time.monotonic()
    while rec.state != "recording":
        assert time.monotonic() - started < recorder.RETRY_S + 4, rec.stats()
        feed.paced(5, 0.01)
    resumed_after = time.monotonic() - started
    resumed = [m for m in records(caplog, logging.INFO) if "resumed" in m]
    assert len(resumed) == 1 and resumed[0].startswith(f"recorder cam0: recording to {directory}")
    feed.as_fast_as_written(2 * GOP)
    assert rec.stop()
    assert len(records(caplog, logging.ERROR)) == 1

    after = list_segments(directory)
    new = [s for s in after if s.path not in {b.path for b in before}]
    assert new and new[0].start > before[-1].start
    for segment in new:
        numbers, packets = play(segment.path)
        # It starts on a keyframe, and every frame decodes to its own picture.
        assert numbers[0] % GOP == 0 and packets >= GOP
        assert numbers == [n % ENCODED for n in range(numbers[0], numbers[0] + packets)]
    stats = rec.stats()
    assert stats["state"] == "stopped" and stats["failures"] == 1
    assert stats["queue_frames_max"] <= rec.queue_frames
    print(f"{codec}: disk full after {feed.next} frames offered; resumed "
          f"{resumed_after:.2f} s after space was freed")


# -- retention ---------------------------------------------------------------------


def test_retention_runs_at_start_and_after_each_segment(tmp_path, caplog, stopped):
    """A segment a day old goes at start (max_age_s); then each completed
    segment brings the directory back under max_bytes, the oldest first:
    what is left is the newest segments, the last one whole."""
    caplog.set_level(logging.INFO, LOGGER)
    old = tmp_path / names.final_name(names.stamp(time.time_ns() - 86_400 * 10**9), 1000, "mp4")
    old.write_bytes(b"\0" * 1000)
    gop_bytes = sum(len(data) for data, _ in encoded("h264")[:GOP])
    rec = new_recorder(tmp_path, "h264", segment_seconds=GOP / FPS, max_age_s=3600,
                       max_bytes=3 * gop_bytes)
    stopped(rec)
    rec.start()
    assert wait_for(lambda: not old.exists(), 5), "retention did not run at start"
    Feed(rec, "h264").as_fast_as_written(ENCODED)
    assert rec.stop()

    left = list_segments(tmp_path)
    deleted = [m for m in records(caplog, logging.INFO) if "retention deleted" in m]
    total = ENCODED // GOP  # segments made, one a GOP
    assert 1 <= len(left) < total
    assert len(deleted) == total - len(left) + 1 == rec.stats()["segments_deleted"]
    assert old.name in deleted[0]
    assert sum(s.size for s in left) <= 3 * gop_bytes
    for k, segment in enumerate(left):  # the newest, in order, nothing missing
        first = (total - len(left) + k) * GOP
        assert play(segment.path) == (list(range(first, first + GOP)), GOP)
