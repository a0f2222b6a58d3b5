"""Forwarding to an SFU: a camera's RTP to a Janus streaming mountpoint
(Janus in a network namespace of its own, over a veth pair), whose own
WebRTC viewers decode every frame in order; RTCP comes back from Janus and
its keyframe requests reach the camera. A forward whose link cannot carry
the stream is dropped like a slow viewer and starts again, while a viewer
of the same camera misses nothing."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

import janus
import netns
from serving import base_url, camera, serving
from waiting import until
from whep_client import WhepViewer, missing_frames

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))

BENCH = Path(__file__).parents[1] / "bench" / "bench_forward.py"

VIEWERS = 3
FPS = 30
SLOW_LIMITS = {"slow_viewer_timeout": 2, "viewer_queue_frames": 3}
# 100 kbit/s for a 1 Mbit/s camera, 1 MB of queue: over the socket's send
# buffer, so the socket backs up (tests/test_slow_viewer.py).
CAP = ("tbf", "rate", "100kbit", "burst", "16kbit", "limit", "1mb")


@pytest.mark.skipif(not janus.available(), reason="janus is not installed")
async def test_janus_viewers_get_the_forwarded_camera(tmp_path):
    with netns.Link("jf") as link, link.in_server(), \
            janus.janus(tmp_path, link.client_ip, prefix=netns.inside(link.client)) as api:
        forward = {"type": "rtp", "host": link.client_ip, "port": janus.VIDEO_PORT,
                   "rtcp_port": janus.VIDEO_RTCP_PORT, "payload_type": janus.VIDEO_PT}
        # A keyframe every 30 s: any other comes because someone asked.
        async with serving(camera("cam0", "h264", keyframe_interval=30, forward=[forward]),
                           address=link.server_ip) as server, \
                aiohttp.ClientSession() as http:
            (forwarder,) = server.forwards
            viewers = [janus.JanusViewer(api) for _ in range(VIEWERS)]
            for viewer in viewers:
                await viewer.connect(http)
            await asyncio.gather(*(viewer.wait_frames(90, timeout=30) for viewer in viewers))
            await until(lambda: forwarder.rtcp_packets > 0, "RTCP from Janus", timeout=10)
            stats = forwarder.stats()
            keyframes = server.cameras["cam0"].broadcaster.keyframes
            async with http.get(base_url(server) + "/api/stats") as response:
                (listed,) = (await response.json())["forwards"]
            async with http.get(base_url(server) + "/metrics") as response:
                metrics = await response.text()
            for viewer in viewers:
                await viewer.hang_up(http)
    print(stats)
    for viewer in viewers:
        numbers = [frame for frame, _ in viewer.codes]
        assert numbers == sorted(numbers) and missing_frames(viewer.codes) <= 3, numbers
    assert stats["state"] == "forwarding" and stats["frames_sent"] > 90, stats
    target = f"rtp://{link.client_ip}:{janus.VIDEO_PORT}"
    assert listed["target"] == target
    assert f'rpistream_forward_up{{camera="cam0",target="{target}"}} 1.0' in metrics
    assert f'rpistream_forward_frames_sent_total{{camera="cam0",target="{target}"}}' in metrics
    # Janus asks its source for a keyframe (PLI) when a viewer joins: through
    # the forward's RTCP socket, counted as the forward's keyframe requests,
    # and the source made keyframes for them (its own come every 30 s).
    assert stats["keyframe_requests"] > 1, stats
    assert keyframes >= 2, keyframes


@pytest.mark.skipif(not janus.available(), reason="janus is not installed")
def test_a_hundred_janus_viewers_decode_the_forwarded_camera():
    """bench/bench_forward.py --quick, whose figures the README quotes: a
    hundred aiortc viewers of Janus, each decoding what Janus fans out of the
    one stream rpistream forwards, every one of them still decoding in the
    measured window. (Its CPU ratio is a figure, not a test: README.)"""
    result = subprocess.run([sys.executable, str(BENCH), "--quick", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["viewers"] == 100, figures
    assert figures["janus_viewers_fps_min"] > 0, figures


async def test_a_forward_that_cannot_keep_up_never_holds_a_viewer_back(tmp_path):
    """The forward's link capped at 100 kbit/s with a deep queue at the
    server's egress (tests/test_slow_viewer.py: the socket backs up): the
    forward falls behind, is dropped and starts again; a WHEP viewer of the
    same camera over lo misses no frame meanwhile."""
    with netns.Link("fs") as link, link.in_server():
        with link.in_client():
            sfu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a receiver there
        with sfu:
            sfu.bind((link.client_ip, 0))
            forward = {"type": "rtp", "host": link.client_ip, "port": sfu.getsockname()[1]}
            async with serving(camera("cam0", "h264", bitrate=1_000_000, forward=[forward]),
                               limits=SLOW_LIMITS, address=link.server_ip) as server, \
                    aiohttp.ClientSession() as http:
                (forwarder,) = server.forwards
                viewer = WhepViewer(base_url(server))
                await viewer.connect(http)
                await viewer.wait_frames(10)
                netns.run(*netns.inside(link.server, "tc", "qdisc", "add", "dev",
                                        link.server_veth, "root", *CAP))
                since = len(viewer.codes)
                await until(lambda: forwarder.restarts >= 1, "the forward dropped and restarted",
                            timeout=20)
                codes = viewer.codes[since:]
                stats = forwarder.stats()
                await viewer.hang_up(http)
    assert stats["error"].startswith("behind for more than"), stats
    assert stats["totals"]["skips_to_keyframe"] >= 1, stats
    assert len(codes) > 2 * FPS and missing_frames(codes) <= 2, missing_frames(codes)


async def test_an_sfu_without_a_route_yet_is_tried_again_and_the_server_serves(tmp_path, caplog):
    """At boot the SFU's network may not be up: the forward says so once,
    the server serves its viewers, and the forward starts once a route
    appears."""
    sfu_ip = "10.250.0.1"  # not routed from the server's namespace, at first
    with netns.Link("fn") as link, link.in_server():
        forward = {"type": "rtp", "host": sfu_ip, "port": 5004}
        async with serving(camera("cam0", "h264", forward=[forward]),
                           address=link.server_ip) as server, aiohttp.ClientSession() as http:
            (forwarder,) = server.forwards
            assert forwarder.state == "failed", forwarder.stats()
            assert forwarder.error.startswith(f"cannot send to {sfu_ip}: "), forwarder.error
            viewer = WhepViewer(base_url(server))
            await viewer.connect(http)
            await viewer.wait_frames(10)
            # The SFU's address comes up on the far side, and a route to it here.
            netns.run(*netns.inside(link.client, "ip", "addr", "add", f"{sfu_ip}/32", "dev",
                                    link.client_veth))
            with link.in_client():
                sfu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sfu:
                sfu.bind((sfu_ip, 5004))
                netns.run(*netns.inside(link.server, "ip", "route", "add", f"{sfu_ip}/32",
                                        "via", link.client_ip))
                await until(lambda: forwarder.state == "forwarding", "the forward started",
                            timeout=10)
                await until(lambda: forwarder.stats()["frames_sent"] > 5, "frames forwarded",
                            timeout=10)
                sfu.setblocking(False)
                packet = sfu.recv(2048)
            await viewer.hang_up(http)
    assert packet[1] & 0x7F == 96
    assert caplog.text.count("cannot send to 10.250.0.1") == 1, caplog.text
