"""Benchmark: what recording costs the server, and what a slow disk costs its viewers.

A real rpistream Server runs alone in a child process with one `file` camera
replaying a camera-like 1280x720 30 fps H.264 stream at 4 Mbit/s (noise on
every frame, a keyframe a second: bench_fanout.encode_clip). On a Pi the
hardware encoder costs the CPU nothing, so a replayed file, not the test
pattern's software encoder, leaves the server's CPU to what it does itself:
packetizing, sending, and recording. Two aiortc viewers watch (soak.py's:
they count frames by RTP marker bits, decoding nothing). The recording goes
to an ext4 file system on a loop device whose writes by the server can be
throttled through a cgroup (tests/disks.py slow_disk(); root needed, else
the slow-disk figures are null, with the reason).

In one run, each for the same window:
1. streaming: recording off; the server's CPU (user + system, every thread);
2. recording: the same, recording on, the disk keeping up; and its peak RSS;
3. slow disk: recording on, the disk throttled to 100 kB/s (a fifth of the
   stream): the server's peak RSS, the frames each viewer got, what the
   recorder dropped.

Printed, and with --json as one JSON object on the last line:
- cpu_vs_streaming: CPU of (2) / CPU of (1): what recording adds;
- slow_disk_peak_rss_delta_mb: peak RSS of (3) minus peak RSS of (2): the
  recorder's bounded queue (rpistream/record/recorder.py) should hold it to
  a few MB whatever the disk does;
- slow_disk_viewer_fps_min: the lowest frame rate a viewer got during (3): 30
  while a slow disk costs the viewers nothing.

    python bench/bench_recording.py [--quick] [--json]

--quick: 3 s windows (under 20 s in all); without it 15 s windows.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from child import ROOT, Child, emit, run_if_child, stdin_lines

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # tests/, and rpistream when not installed

import bench_fanout  # noqa: E402  (the clip)
import timing  # noqa: E402  (the command line)
import soak  # noqa: E402  (the viewers)

SLOW_BYTES_PER_S = 100_000
VIEWERS = 2
SETTLE_S = 1.0  # after recording starts or the disk changes, before a window opens
RSS_EVERY_S = 0.1
# Bounds on every wait, in seconds.
START_TIMEOUT = 30.0
CLOSE_TIMEOUT = 10.0  # stopping a recording completes its segment (an fsync)


# --- children (bench/child.py) -------------------------------------------------------

async def child_server(clip: str, directory: str) -> None:
    from tests.serving import camera, serving

    record = {"directory": directory, "segment_seconds": 10, "min_free_bytes": "1M"}
    cam = camera("cam0", "h264", "file", width=bench_fanout.WIDTH, height=bench_fanout.HEIGHT,
                 fps=bench_fanout.FPS, bitrate=bench_fanout.BITRATE, options={"path": clip},
                 record=record)
    async with serving(cam) as server:
        source = server.cameras["cam0"]
        emit({"pid": os.getpid(), "url": f"http://127.0.0.1:{server.port}/cameras/cam0/whep"})
        async for command in stdin_lines():
            if command["op"] == "record":
                if command["on"]:
                    await source.start_recording()
                else:
                    await source.stop_recording()
                emit({"recording": source.recorder is not None})
            elif command["op"] == "stats":
                recorder = source.recorder
                emit({"frames": source.broadcaster.frames,
                      "recorder": recorder.stats() if recorder else None})
            elif command["op"] == "quit":
                return


CHILD_ROLES = {
    "server": child_server,
    "viewers": lambda url: soak.child_viewers(url, VIEWERS, float("inf")),
}


# --- the parent ----------------------------------------------------------------------

async def window(seconds: float, process, viewers: Child, server: Child) -> dict:
    """The server's CPU seconds per second and peak RSS over `seconds`, the
    frames per second each viewer got, and the recorder's stats at the end."""
    def frames(counts):
        return counts["steady_frames"] + [counts["reconnecting_frames"]]

    before = frames(await viewers.ask(op="counts"))
    cpu = process.cpu_times()
    started = time.monotonic()
    peak = 0
    while (elapsed := time.monotonic() - started) < seconds:
        peak = max(peak, process.memory_info().rss)
        await asyncio.sleep(min(RSS_EVERY_S, seconds - elapsed))
    after_cpu = process.cpu_times()
    elapsed = time.monotonic() - started
    after = frames(await viewers.ask(op="counts"))
    stats = await server.ask(op="stats")
    return {
        "cpu": (after_cpu.user + after_cpu.system - cpu.user - cpu.system) / elapsed,
        "peak_rss_mb": peak / 2**20,
        "viewer_fps": [(b - a) / elapsed for a, b in zip(before, after)],
        "recorder": stats["recorder"],
    }


async def run(seconds: float) -> dict:
    import psutil

    from tests.disks import DiskUnavailable, slow_disk

    with tempfile.TemporaryDirectory(prefix="rpistream-bench-recording-") as tmp:
        clip = os.path.join(tmp, "clip.h264")
        clip_info = bench_fanout.encode_clip(clip)
        try:
            disk_context = slow_disk(Path(tmp))
            disk = disk_context.__enter__()
            no_slow_disk = None
        except DiskUnavailable as exc:
            disk_context, disk, no_slow_disk = None, None, str(exc)
        try:
            directory = (disk.mount if disk else Path(tmp)) / "cam0"
            server = await Child.start(__file__, "server", clip, str(directory),
                                       quit_timeout=CLOSE_TIMEOUT)
            viewers = None
            try:
                hello = await server.reply(START_TIMEOUT)
                process = psutil.Process(hello["pid"])
                if disk:
                    disk.add(process.pid)
                viewers = await Child.start(__file__, "viewers", hello["url"],
                                            quit_timeout=CLOSE_TIMEOUT)
                await viewers.reply(START_TIMEOUT)
                await asyncio.sleep(SETTLE_S)
                streaming = await window(seconds, process, viewers, server)
                await server.ask(op="record", on=True, timeout=CLOSE_TIMEOUT)
                await asyncio.sleep(SETTLE_S)
                recording = await window(seconds, process, viewers, server)
                slow = None
                if disk:
                    disk.throttle(SLOW_BYTES_PER_S)
                    slow = await window(seconds, process, viewers, server)
                    disk.throttle(None)
                await server.ask(op="record", on=False, timeout=CLOSE_TIMEOUT)
            finally:
                if viewers is not None:
                    await viewers.stop()
                await server.stop()
        finally:
            if disk_context is not None:
                disk_context.__exit__(None, None, None)
    return {"clip": clip_info, "seconds": seconds, "streaming": streaming,
            "recording": recording, "slow": slow, "no_slow_disk": no_slow_disk}


def summarize(result: dict) -> dict:
    streaming, recording, slow = result["streaming"], result["recording"], result["slow"]
    figures = {
        "cpu_vs_streaming": round(recording["cpu"] / streaming["cpu"], 3),
        "slow_disk_peak_rss_delta_mb":
            round(slow["peak_rss_mb"] - recording["peak_rss_mb"], 2) if slow else None,
        "slow_disk_viewer_fps_min": round(min(slow["viewer_fps"]), 1) if slow else None,
        "streaming_cpu_percent": round(100 * streaming["cpu"], 1),
        "recording_cpu_percent": round(100 * recording["cpu"], 1),
        "recording_peak_rss_mb": round(recording["peak_rss_mb"], 1),
        "recording_viewer_fps_min": round(min(recording["viewer_fps"]), 1),
        "window_s": result["seconds"],
        "stream_mbit_per_s": result["clip"]["mbit_per_s"],
    }
    if slow:
        rec = slow["recorder"]
        figures.update({
            "slow_disk_bytes_per_s": SLOW_BYTES_PER_S,
            "slow_disk_frames_dropped": rec["frames_dropped"]
            - recording["recorder"]["frames_dropped"],
            "slow_disk_write_ms_max": round(rec["write_ms_max"], 1),
            "slow_disk_queue_bytes_max": rec["queue_bytes_max"],
            "slow_disk_queue_frames_max": rec["queue_frames_max"],
        })
    else:
        figures["no_slow_disk"] = result["no_slow_disk"]
    return figures


def main() -> None:
    if run_if_child(CHILD_ROLES):
        return
    args = timing.arguments(__doc__.split("\n\n")[0])
    figures = summarize(asyncio.run(run(3.0 if args.quick else 15.0)))
    print(f"{figures['stream_mbit_per_s']} Mbit/s 720p30 H.264 from a file, {VIEWERS} viewers, "
          f"{figures['window_s']:g} s windows")
    print(f"server CPU: streaming {figures['streaming_cpu_percent']} %, recording too "
          f"{figures['recording_cpu_percent']} %: x{figures['cpu_vs_streaming']}")
    if figures["slow_disk_viewer_fps_min"] is None:
        print(f"slow disk: not measured ({figures['no_slow_disk']})")
    else:
        print(f"disk throttled to {SLOW_BYTES_PER_S // 1000} kB/s: peak RSS "
              f"{figures['slow_disk_peak_rss_delta_mb']:+} MB over recording's "
              f"{figures['recording_peak_rss_mb']} MB; viewers got at least "
              f"{figures['slow_disk_viewer_fps_min']} fps; the recorder dropped "
              f"{figures['slow_disk_frames_dropped']} frames (queue at most "
              f"{figures['slow_disk_queue_frames_max']} frames, "
              f"{figures['slow_disk_queue_bytes_max']} bytes; a write took up to "
              f"{figures['slow_disk_write_ms_max']} ms)")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
