"""Benchmark: rpistream's CPU while an SFU fans its camera out to 100 viewers.

A real rpistream Server runs alone in a child process with one `file`
camera, replaying H.264 (CLIP: a sliding texture with fresh noise on every
frame, a keyframe a second; bench_fanout.encode_clip), forwarded as RTP
([[camera.forward]] type rtp) to Debian's Janus 1.1, whose streaming
mountpoint fans it out. Janus runs in a network namespace of its own and
rpistream in another, joined by a veth pair (Janus gathers no loopback
candidates; tests/netns.py, tests/janus.py). The viewers are aiortc peers of
Janus (tests/janus.py JanusViewer: Janus's HTTP API, then WebRTC) in a child
process of their own, and each decodes every frame it gets (PyAV, in
aiortc's decoder thread). The clip is small (320x240, 15 fps) so that a
hundred decoders fit on this machine's two cores beside Janus and rpistream.

In one run, each for the same window:
1. one Janus viewer: rpistream's CPU (user + system, every thread);
2. VIEWERS Janus viewers, every one receiving: the same.

Printed, and with --json as one JSON object on the last line:
- cpu_100_vs_1: rpistream's CPU of (2) / CPU of (1) (from the kernel's
  per-thread run times, to the nanosecond). rpistream sends the SFU
  one stream whatever its viewer count, so this stays near 1 (the target is
  within 10 %); what the SFU's viewers add is their keyframe requests (a PLI
  each as they join), which pass the camera's rate limit;
- janus_viewers_fps_min: the lowest frame rate a viewer decoded during (2);
- cpu_percent_1, cpu_percent_100, the viewers' connect time, the camera's
  keyframes and the forward's keyframe requests in each window.

    python bench/bench_forward.py [--quick] [--json]   (as root: namespaces)

--quick: 4 s windows; without it 20 s windows. Connecting the hundred
viewers through Janus takes most of the run (DTLS in Python, a few at a
time): --quick takes about 30 s here, over the usual 20, because the hundred
viewers are the point.
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

for path in (ROOT, os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)  # tests/ (netns, janus), and rpistream when not installed

import bench_fanout  # noqa: E402  (the clip)
import timing  # noqa: E402  (the command line)

VIEWERS = 100
CLIP = {"width": 320, "height": 240, "fps": 15, "bitrate": 300_000}
# Viewers connecting at once: each costs Janus an HTTP long poll and aiortc
# a DTLS handshake; more at once only queues them in the same two CPUs.
CONNECT_AT_ONCE = 10
SETTLE_S = 2.0  # after the last viewer's first frame (its PLI's keyframe), before a window
# Bounds on every wait, in seconds.
START_TIMEOUT = 30.0
CONNECT_TIMEOUT = 120.0  # all the viewers connected and decoding
CLOSE_TIMEOUT = 30.0  # a hundred hang-ups


# --- children (bench/child.py) -------------------------------------------------------

async def child_server(clip: str, janus_ip: str, address: str) -> None:
    import janus
    from serving import camera, serving

    forward = {"type": "rtp", "host": janus_ip, "port": janus.VIDEO_PORT,
               "rtcp_port": janus.VIDEO_RTCP_PORT, "payload_type": janus.VIDEO_PT}
    cam = camera("cam0", "h264", "file", width=CLIP["width"], height=CLIP["height"],
                 fps=CLIP["fps"], bitrate=CLIP["bitrate"], options={"path": clip},
                 forward=[forward])
    async with serving(cam, address=address) as server:
        (forwarder,) = server.forwards
        emit({"pid": os.getpid()})
        async for command in stdin_lines():
            if command["op"] == "stats":
                stats = forwarder.stats()
                emit({"keyframes": server.cameras["cam0"].broadcaster.keyframes,
                      "keyframe_requests": stats["keyframe_requests"],
                      "forward_state": stats["state"], "frames_sent": stats["frames_sent"]})
            elif command["op"] == "quit":
                return


async def child_viewers(janus_url: str, address: str) -> None:
    import aiohttp

    import janus
    from rpistream.webrtc import aiortc_internals

    aiortc_internals.restrict_host_addresses([address])  # ICE in this namespace only
    viewers: list = []
    async with aiohttp.ClientSession() as http:
        emit({"ready": True})
        async for command in stdin_lines():
            if command["op"] == "connect":
                started = time.monotonic()
                gate = asyncio.Semaphore(CONNECT_AT_ONCE)

                async def connect_one():
                    viewer = janus.JanusViewer(janus_url, read_codes=False)
                    viewers.append(viewer)
                    async with gate:
                        await viewer.connect(http)
                        while viewer.frames == 0:
                            await asyncio.sleep(0.05)

                await asyncio.gather(*(connect_one() for _ in range(command["count"])))
                emit({"viewers": len(viewers), "seconds": time.monotonic() - started})
            elif command["op"] == "counts":
                emit({"frames": [viewer.frames for viewer in viewers]})
            elif command["op"] == "quit":
                await asyncio.gather(*(viewer.hang_up(http) for viewer in viewers),
                                     return_exceptions=True)
                return


CHILD_ROLES = {"server": child_server, "viewers": child_viewers}


# --- the parent ----------------------------------------------------------------------

def cpu_and_wakeups(pid: int) -> tuple[float, int]:
    """The CPU seconds of every thread of `pid`, to the nanosecond (the first
    field of each /proc/PID/task/TID/schedstat: rpistream uses about 1 % of a
    core here, which the 10 ms ticks of /proc/PID/stat would measure to ±25 %
    over a 4 s window), and how many times they slept and woke (voluntary
    context switches). A thread that ended meanwhile is not counted;
    rpistream's own threads live as long as it does."""
    ns = wakeups = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                ns += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{task}/status") as f:
                wakeups += next(int(line.split()[1]) for line in f
                                if line.startswith("voluntary_ctxt_switches:"))
        except FileNotFoundError:
            pass  # ended since the listing
    return ns / 1e9, wakeups


async def window(seconds: float, pid: int, viewers: Child, server: Child) -> dict:
    """rpistream's CPU seconds per second over `seconds`, the frames per
    second each viewer decoded, and the camera's keyframes meanwhile."""
    before, stats = (await viewers.ask(op="counts"))["frames"], await server.ask(op="stats")
    cpu, wakeups = cpu_and_wakeups(pid)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    after_cpu, after_wakeups = cpu_and_wakeups(pid)
    elapsed = time.monotonic() - started
    after, end = (await viewers.ask(op="counts"))["frames"], await server.ask(op="stats")
    return {
        "cpu": (after_cpu - cpu) / elapsed,
        "wakeups_per_s": (after_wakeups - wakeups) / elapsed,
        "viewer_fps": [(b - a) / elapsed for a, b in zip(before, after)],
        "keyframes": end["keyframes"] - stats["keyframes"],
        "keyframe_requests": end["keyframe_requests"] - stats["keyframe_requests"],
        "forward_state": end["forward_state"],
    }


async def run(seconds: float) -> dict:
    import janus
    import netns

    unavailable = netns.available() or (None if janus.available() else "janus is not installed")
    if unavailable:
        raise SystemExit(f"bench_forward: cannot run: {unavailable}")
    # This process and its children (rpistream, the viewers) in one namespace,
    # Janus in the other.
    with tempfile.TemporaryDirectory(prefix="rpistream-bench-forward-") as tmp, \
            netns.Link("bf") as link, link.in_server(), \
            janus.janus(Path(tmp), link.client_ip, prefix=netns.inside(link.client)) as api:
        clip = os.path.join(tmp, "clip.h264")
        clip_info = bench_fanout.encode_clip(clip, **CLIP)
        server = await Child.start(__file__, "server", clip, link.client_ip, link.server_ip,
                                   quit_timeout=CLOSE_TIMEOUT)
        viewers = None
        try:
            pid = (await server.reply(START_TIMEOUT))["pid"]
            viewers = await Child.start(__file__, "viewers", api, link.server_ip,
                                        quit_timeout=CLOSE_TIMEOUT)
            await viewers.reply(START_TIMEOUT)
            first = await viewers.ask(op="connect", count=1, timeout=CONNECT_TIMEOUT)
            await asyncio.sleep(SETTLE_S)
            one = await window(seconds, pid, viewers, server)
            rest = await viewers.ask(op="connect", count=VIEWERS - 1, timeout=CONNECT_TIMEOUT)
            await asyncio.sleep(SETTLE_S)
            hundred = await window(seconds, pid, viewers, server)
        finally:
            if viewers is not None:
                await viewers.stop()
            await server.stop()
    return {"clip": clip_info, "seconds": seconds, "one": one, "hundred": hundred,
            "connect_s": {"1": first["seconds"], str(VIEWERS - 1): rest["seconds"]}}


def summarize(result: dict) -> dict:
    one, hundred = result["one"], result["hundred"]
    return {
        "cpu_100_vs_1": round(hundred["cpu"] / one["cpu"], 3),
        "janus_viewers_fps_min": round(min(hundred["viewer_fps"]), 1),
        "viewers": len(hundred["viewer_fps"]),
        "cpu_percent_1": round(100 * one["cpu"], 2),
        "cpu_percent_100": round(100 * hundred["cpu"], 2),
        "viewer_fps_1": round(one["viewer_fps"][0], 1),
        "wakeups_per_s_1": round(one["wakeups_per_s"]),
        "wakeups_per_s_100": round(hundred["wakeups_per_s"]),
        "keyframes_1": one["keyframes"], "keyframes_100": hundred["keyframes"],
        "keyframe_requests_1": one["keyframe_requests"],
        "keyframe_requests_100": hundred["keyframe_requests"],
        "connect_99_s": round(result["connect_s"][str(VIEWERS - 1)], 1),
        "window_s": result["seconds"],
        "stream_mbit_per_s": result["clip"]["mbit_per_s"],
        "clip": f"{CLIP['width']}x{CLIP['height']} {CLIP['fps']} fps H.264",
    }


def main() -> None:
    if run_if_child(CHILD_ROLES):
        return
    args = timing.arguments(__doc__.split("\n\n")[0])
    figures = summarize(asyncio.run(run(4.0 if args.quick else 20.0)))
    print(f"{figures['clip']} at {figures['stream_mbit_per_s']} Mbit/s from a file, forwarded "
          f"to Janus; {figures['window_s']:g} s windows")
    print(f"rpistream CPU: 1 Janus viewer {figures['cpu_percent_1']} %, {figures['viewers']} "
          f"viewers {figures['cpu_percent_100']} %: x{figures['cpu_100_vs_1']} (its threads "
          f"woke {figures['wakeups_per_s_1']} and {figures['wakeups_per_s_100']} times a second)")
    print(f"the slowest of {figures['viewers']} viewers decoded {figures['janus_viewers_fps_min']}"
          f" fps (one alone: {figures['viewer_fps_1']}); {figures['viewers'] - 1} connected in "
          f"{figures['connect_99_s']} s; keyframes in the windows: {figures['keyframes_1']} and "
          f"{figures['keyframes_100']}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
