"""Benchmark: latency the server adds, and glass to glass in Chromium.

(a) Server-added latency: from a frame's push into the camera's FrameRing to
    its last packet (the RTP marker) handed to the socket, for every one of
    10 aiortc viewers on loopback. The viewers run in a child process, with
    decoding switched off (they are sinks: the server is what is measured).
    Measured from outside, no production code changed: the source's `_push`
    and each Viewer's `_send` are wrapped (the wrappers add well under a
    microsecond per packet).
(b) Glass to glass: the capture time the test pattern writes into each frame
    (its block code, taken before encoding: encode time counts) to the moment
    Chromium presents the frame, as the viewer page reads it
    (window.rpistream, requestVideoFrameCallback).

Both on a 1280x720 30 fps H.264 test pattern, over 127.0.0.1 only.

    python bench/bench_latency.py [--quick] [--json] [--viewers N]

--quick measures 5 s of each (about 25 s in all), the default 20 s each.
--json prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from serving import base_url, camera, serving  # noqa: E402  (tests/serving.py)

from rpistream.core.native import NATIVE  # noqa: E402

CAMERA = camera("cam0", "h264", width=1280, height=720, fps=30, bitrate=2_000_000)
CLIENT_READY_TIMEOUT = 30.0
# Push times kept for matching against packets: 2 s at 30 fps, far more than
# a frame spends between the ring and the socket.
PUSHES_KEPT = 60


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- (a) the viewers: a child process of aiortc peers -----------------------------

class NullDecoder:
    """Stands in for aiortc's decoders in the client peers: nothing decoded."""

    def decode(self, encoded_frame):
        return []


async def client_peers(url: str, count: int) -> None:
    """`count` WHEP viewers of `url`: print "ready" once all are connected,
    hang up when stdin closes."""
    import aiohttp
    import aiortc.rtcrtpreceiver
    from yarl import URL
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from rpistream.webrtc.aiortc_internals import restrict_host_addresses

    restrict_host_addresses(["127.0.0.1"])  # aioice skips loopback otherwise
    aiortc.rtcrtpreceiver.get_decoder = lambda codec: NullDecoder()
    peers, sessions = [], []
    async with aiohttp.ClientSession() as http:
        try:
            for _ in range(count):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                peers.append(pc)
                pc.addTransceiver("video", direction="recvonly")
                await pc.setLocalDescription(await pc.createOffer())  # gathers candidates
                async with http.post(url, data=pc.localDescription.sdp,
                                     headers={"Content-Type": "application/sdp"}) as response:
                    answer = await response.text()
                    if response.status != 201:
                        raise SystemExit(f"POST {url}: {response.status} {answer}")
                    sessions.append(str(response.url.join(URL(response.headers["Location"]))))
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            deadline = time.monotonic() + CLIENT_READY_TIMEOUT
            while any(pc.connectionState != "connected" for pc in peers):
                if time.monotonic() > deadline:
                    raise SystemExit("the viewers did not all connect within "
                                     f"{CLIENT_READY_TIMEOUT:g} s")
                await asyncio.sleep(0.05)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            for session in sessions:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.delete(session):
                        pass
            await asyncio.gather(*(pc.close() for pc in peers), return_exceptions=True)


async def server_latency(server, viewers: int, seconds: float) -> dict:
    """Ring push → marker packet sent, per frame and viewer, over `seconds`."""
    cam = server.cameras["cam0"]
    url = base_url(server) + "/cameras/cam0/whep"
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--clients", url, "--viewers", str(viewers),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = await asyncio.wait_for(child.stdout.readline(), CLIENT_READY_TIMEOUT + 15)
        if line.strip() != b"ready":
            raise RuntimeError(f"the viewers' process failed (exit {await child.wait()})")
        # Measure only once every viewer streams (has had its first keyframe).
        ready_at = time.monotonic()
        while not (len(server.sessions.sessions) == viewers and all(
                s.viewer is not None and s.viewer.state == "streaming"
                for s in server.sessions.sessions.values())):
            if time.monotonic() > ready_at + 10:
                raise RuntimeError("the server did not start streaming to every viewer")
            await asyncio.sleep(0.01)
        streaming_after = time.monotonic() - ready_at

        pushed: OrderedDict[int, int] = OrderedDict()  # RTP timestamp -> push time
        lock = threading.Lock()
        source, broadcaster = cam.source, cam.broadcaster
        original_push = source._push

        def timed_push(data, capture_ns, pts, keyframe):
            now = time.monotonic_ns()
            with lock:
                pushed[broadcaster.rtp_timestamp(capture_ns)] = now
                while len(pushed) > PUSHES_KEPT:
                    pushed.popitem(last=False)
            return original_push(data, capture_ns, pts, keyframe)

        samples: list[int] = []  # ns, one per (frame, viewer)
        last_viewer: dict[int, int] = {}  # RTP timestamp -> latest marker send, ns

        def wrap(viewer):
            send, marker_byte = viewer._send, 0x80 | viewer.params.payload_type

            def timed_send(packet):
                sent = send(packet)
                if packet[1] == marker_byte and sent:  # RTCP's second byte is 192..223
                    now = time.monotonic_ns()
                    timestamp = int.from_bytes(packet[4:8], "big")
                    with lock:
                        at = pushed.get(timestamp)
                    if at is not None:
                        samples.append(now - at)
                        last_viewer[timestamp] = now - at
                return sent

            viewer._send = timed_send

        watched = [session.viewer for session in server.sessions.sessions.values()]
        for viewer in watched:
            wrap(viewer)
        source._push = timed_push
        frames_before = broadcaster.frames
        skipped_before = sum(v.frames_skipped for v in watched)
        await asyncio.sleep(seconds)
        source._push = original_push
        frames = broadcaster.frames - frames_before
        skipped = sum(v.frames_skipped for v in watched) - skipped_before
        states = sorted({v.state for v in watched})
    finally:
        if child.returncode is None:
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), 10)
            except asyncio.TimeoutError:
                child.kill()
                await child.wait()
    if not samples:
        raise RuntimeError("no frame reached a viewer")
    ms = [s / 1e6 for s in samples]
    fanout = [s / 1e6 for s in last_viewer.values()]
    return {
        "viewers": viewers, "frames": frames, "samples": len(samples),
        "viewer_frames_skipped": skipped, "viewer_states": states,
        "all_streaming_after_connected_s": round(streaming_after, 2),
        "server_p50_ms": round(statistics.median(ms), 3),
        "server_p99_ms": round(percentile(ms, 99), 3),
        "server_max_ms": round(max(ms), 3),
        "server_last_viewer_p50_ms": round(statistics.median(fanout), 3),
    }


# --- (b) glass to glass in Chromium --------------------------------------------------

async def glass_to_glass(server, seconds: float) -> dict:
    from chromium import available, block_codes_since, chromium

    if not available():
        return {"g2g_skipped": "no /usr/bin/chromium (apt install chromium)"}
    frames: dict[int, float] = {}  # frame number -> latency ms
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as profile:
        async with chromium(Path(profile)) as browser:
            page = await browser.new_page()
            await page.goto(base_url(server) + "/?camera=cam0")
            await page.wait_for_function(
                "window.rpistream?.players?.cam0?.frames.length > 30", timeout=20_000)
            since = await page.evaluate("Date.now()")
            end = time.monotonic() + seconds
            # The page keeps 10 s of frames: read them every few seconds.
            while True:
                await asyncio.sleep(max(0.0, min(3.0, end - time.monotonic())))
                for f in await block_codes_since(page, "cam0", since):
                    frames[f["frame"]] = f["presentedMs"] - f["captureMs"]
                    since = max(since, f["presentedMs"] + 0.001)
                if time.monotonic() >= end:
                    break
            stats = await page.evaluate("window.rpistream.players.cam0.stats")
    if not frames:
        raise RuntimeError("Chromium presented no frame with a block code")
    latencies = list(frames.values())
    numbers = sorted(frames)
    return {
        "g2g_frames": len(frames),
        "g2g_frames_made": numbers[-1] - numbers[0] + 1,
        "g2g_p50_ms": round(statistics.median(latencies), 1),
        "g2g_p95_ms": round(percentile(latencies, 95), 1),
        "g2g_max_ms": round(max(latencies), 1),
        "chromium_freezes": stats.get("freezes"),
        "chromium_packets_lost": stats.get("packetsLost"),
    }


async def run(args) -> dict:
    seconds = 5.0 if args.quick else 20.0
    result = {"mode": "quick" if args.quick else "full", "seconds_each": seconds,
              "camera": f"{CAMERA['width']}x{CAMERA['height']}@{CAMERA['fps']} h264",
              "loadavg_1min": round(os.getloadavg()[0], 2),
              "extensions": NATIVE}
    async with serving(CAMERA) as server:
        result.update(await server_latency(server, args.viewers, seconds))
        deadline = time.monotonic() + 10
        while server.sessions.count() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        result.update(await glass_to_glass(server, seconds))
    return result


def table(result: dict) -> str:
    rows = [
        ("camera", result["camera"]),
        ("load average (1 min) at start", result["loadavg_1min"]),
        (f"(a) ring push -> marker packet sent, {result['viewers']} viewers", ""),
        ("    samples (frame x viewer)", result["samples"]),
        ("    p50 / p99 / max  (target p99 <= 2 ms)",
         f"{result['server_p50_ms']:.3f} / {result['server_p99_ms']:.3f} / "
         f"{result['server_max_ms']:.3f} ms"),
        ("    p50 to the last viewer of a frame", f"{result['server_last_viewer_p50_ms']:.3f} ms"),
    ]
    if "g2g_skipped" in result:
        rows.append(("(b) glass to glass", "skipped: " + result["g2g_skipped"]))
    else:
        rows += [
            ("(b) capture -> presented in Chromium", ""),
            ("    frames read / made", f"{result['g2g_frames']} / {result['g2g_frames_made']}"),
            ("    p50 / p95 / max  (target p50 <= 50 ms)",
             f"{result['g2g_p50_ms']:.1f} / {result['g2g_p95_ms']:.1f} / "
             f"{result['g2g_max_ms']:.1f} ms"),
            ("    Chromium freezes / packets lost",
             f"{result['chromium_freezes']} / {result['chromium_packets_lost']}"),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s of each measurement")
    parser.add_argument("--json", action="store_true", help="a JSON object as the last line")
    parser.add_argument("--viewers", type=int, default=10, help="aiortc viewers for (a)")
    parser.add_argument("--clients", metavar="WHEP_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients:  # the child process of (a)
        asyncio.run(client_peers(args.clients, args.viewers))
        return
    result = asyncio.run(run(args))
    print(table(result))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
