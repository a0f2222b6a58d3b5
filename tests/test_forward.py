"""Forwarding to an SFU: a camera's RTP to a Janus streaming mountpoint
(Janus in a network namespace of its own, over a veth pair), whose own
WebRTC viewers decode every frame in order; RTCP comes back from Janus and
its keyframe requests reach the camera."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

import janus
import netns
from serving import base_url, camera, serving
from waiting import until
from whep_client import missing_frames

pytestmark = [
    pytest.mark.skipif(netns.available() is not None, reason=str(netns.available())),
    pytest.mark.skipif(not janus.available(), reason="janus is not installed"),
]

VIEWERS = 3


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
