"""A recording server on a disk that cannot keep up, and on one that fills.

The server runs as a process of its own (its RSS is its own), recording a
640x360 H.264 test pattern while an aiortc viewer watches. Then the disk
goes wrong for a while and comes back:
- slow: writes throttled to a third of the stream's bytes (tests/disks.py
  slow_disk(), a loop device with cgroup write throttling);
- full: a small tmpfs that another program (a ballast file here) keeps
  full: retention gives up the camera's older segments to keep
  min_free_bytes, then there is nothing left to free; then the ballast is
  deleted.
Either way the viewer misses no frame (the server skipped none for it and it
decoded about every frame the camera made), the server's RSS stays within
the recorder's bounds, the recorder counts what it dropped, and it records
again by itself once the disk is back; every segment then plays.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import av
import psutil
import pytest

from disks import DiskUnavailable, slow_disk, small_tmpfs
from rpistream.record import list_segments
from rpistream.sources import blockcode
from serving import server_process
from waiting import until
from whep_client import WhepViewer, missing_frames

FPS = 30
SEGMENT_SECONDS = 2.0
TROUBLE_S = 10.0  # how long the disk is slow or full
# The test pattern's simple picture compresses to about 30 kB/s at 640x360
# whatever its bitrate: a third of that. (bench/bench_recording.py throttles
# a camera-like 4 Mbit/s stream, 500 kB/s, to 100 kB/s.)
SLOW_BYTES_PER_S = 10_000
# The recorder's own bound (rpistream/record/recorder.py): its queue (8 MiB)
# and the SegmentWriter's buffers (two of 4 MiB). RSS may grow by that, and
# no more, whatever the disk does.
RECORDER_BOUND_MB = 16
# Frames the viewer may miss while the disk is in trouble (read from the
# block codes): aiortc's receiver can lose one to its jitter buffer on a busy
# machine; the server's own record (frames skipped for it) must be clean.
MISSING_MAX = 0.02


def write_config(tmp_path, directory) -> object:
    config = tmp_path / "config.toml"
    config.write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\nice_hosts = ["127.0.0.1"]\n'
        '[[camera]]\nsource = "testpattern"\nwidth = 640\nheight = 360\nfps = 30\n'
        'keyframe_interval = 1\n'
        f'[camera.record]\nenabled = true\ndirectory = "{directory}"\n'
        f'segment_seconds = {SEGMENT_SECONDS}\nmin_free_bytes = "1M"\n')
    return config


async def api_stats(http, url) -> dict:
    async with http.get(url + "/api/stats") as response:
        return await response.json()


def recording(stats: dict) -> dict:
    return stats["cameras"]["cam0"]["recording"]


async def watch_trouble(http, url, process, viewer, trouble, clear) -> dict:
    """Record the disk's trouble: before it (RSS), during it (RSS, the
    viewer's frames, the recorder's drops) and after it is cleared (until
    the recorder completes segments again). `trouble()` is called as it
    starts and then 4 times a second (a disk another program fills is
    topped up), `clear()` once at its end."""
    rss = psutil.Process(process.pid)
    before = await api_stats(http, url)
    rss_before = 0
    for _ in range(4):
        rss_before = max(rss_before, rss.memory_info().rss)
        await asyncio.sleep(0.25)
    codes_before = len(viewer.codes)
    peak, deadline = rss_before, time.monotonic() + TROUBLE_S
    while time.monotonic() < deadline:
        trouble()
        peak = max(peak, rss.memory_info().rss)
        await asyncio.sleep(0.25)
    during = await api_stats(http, url)
    window = viewer.codes[codes_before:]
    clear()
    done = recording(during)["segments"]
    await until_async(lambda: api_stats(http, url),
                      lambda s: recording(s)["state"] == "recording"
                      and recording(s)["segments"] >= done + 2, "two segments completed again")
    return {"before": before, "during": during, "decoded": len(window),
            "missing": missing_frames(window), "rss_growth_mb": (peak - rss_before) / 2**20}


async def until_async(read, condition, what: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while not condition(value := await read()):
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}: {value}"
        await asyncio.sleep(0.2)
    return value


def check(figures: dict, drops_key: str) -> None:
    before, during = figures["before"], figures["during"]
    (viewer_before,), (viewer,) = before["viewers"], during["viewers"]
    for key in ("frames_skipped", "skips_to_keyframe"):
        assert viewer[key] == viewer_before[key], (key, viewer_before, viewer)
    assert figures["decoded"] > FPS * TROUBLE_S / 2, figures["decoded"]
    assert figures["missing"] <= MISSING_MAX * figures["decoded"], figures["missing"]
    dropped = recording(during)[drops_key] - recording(before)[drops_key]
    assert dropped > 0, repr((recording(before), recording(during)))
    assert recording(during)["queue_frames_max"] <= recording(during)["queue_frames_limit"]
    assert figures["rss_growth_mb"] < RECORDER_BOUND_MB, figures["rss_growth_mb"]


def check_segments(directory) -> None:
    """Every segment plays, its frames in order; a drop shows as a jump
    forward, never a frame out of place."""
    segments = list_segments(directory)
    assert segments and not any(directory.glob("*.partial"))
    for segment in segments:
        with av.open(str(segment.path)) as container:
            numbers = [blockcode.read(frame.to_ndarray(format="gray"))[0]
                       for frame in container.decode(video=0)]
        assert numbers and all(b > a for a, b in zip(numbers, numbers[1:])), (segment, numbers)


@pytest.fixture
def throttled_disk(tmp_path):
    try:
        with slow_disk(tmp_path) as disk:
            yield disk
    except DiskUnavailable as exc:
        pytest.skip(f"no throttled disk on this machine: {exc}")


async def test_a_slow_disk_costs_the_viewers_nothing(tmp_path, throttled_disk):
    disk = throttled_disk
    directory = disk.mount / "cam0"
    with server_process(write_config(tmp_path, directory), tmp_path / "server.log",
                        wrap=disk.command) as (process, url):
        async with aiohttp.ClientSession() as http:
            viewer = WhepViewer(url)
            await viewer.connect(http)
            await until(lambda: len(list_segments(directory)) >= 1, "a first segment",
                        timeout=15)
            figures = await watch_trouble(http, url, process, viewer,
                                          lambda: disk.throttle(SLOW_BYTES_PER_S),
                                          lambda: disk.throttle(None))
            await viewer.hang_up(http)
    check(figures, "frames_dropped_queue")
    during = recording(figures["during"])
    assert during["write_ms_max"] > 500, during  # the disk was slow indeed
    check_segments(directory)


async def test_a_full_disk_costs_the_viewers_nothing(tmp_path):
    with small_tmpfs(tmp_path, "8m") as mount:
        directory = mount / "cam0"
        ballast = mount / "ballast"

        def fill():
            # Unbuffered: a buffered file keeps what the full disk refused and
            # raises ENOSPC again when it closes (CI saw it, past the suppress).
            with contextlib.suppress(OSError), open(ballast, "ab", buffering=0) as f:
                while True:  # until ENOSPC: full
                    f.write(bytes(2**16))

        with server_process(write_config(tmp_path, directory), tmp_path / "server.log") \
                as (process, url):
            async with aiohttp.ClientSession() as http:
                viewer = WhepViewer(url)
                await viewer.connect(http)
                await until(lambda: len(list_segments(directory)) >= 1, "a first segment",
                            timeout=15)
                figures = await watch_trouble(http, url, process, viewer, fill,
                                              ballast.unlink)
                await viewer.hang_up(http)
        log = (tmp_path / "server.log").read_text()
        assert "disk full" in log and "resumed" in log, log
        assert "Traceback" not in log, log
        check(figures, "frames_dropped_disk")
        assert recording(figures["during"])["state"] == "disk-full"
        check_segments(directory)
