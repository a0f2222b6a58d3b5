"""A slow viewer does not slow the others: one viewer's link capped far below
the stream's bitrate (tbf on the server's side of a veth link between two
network namespaces) while a healthy viewer watches the same camera over lo.

What the server can see depends on where the bottleneck's queue is:
- a deep queue at the server's own egress (a Pi whose uplink is the slowest
  hop: the driver and qdisc hold packets) fills the UDP socket's send buffer,
  sendto() would block, the datagram transport backs up: the viewer queues a
  few frames, skips to keyframes, and is disconnected after
  limits.slow_viewer_timeout;
- a short queue that drops (tbf with `latency 50ms`, or any router further
  on) never backs the socket up: Linux counts a qdisc drop of a UDP datagram
  as sent (udp_send_skb: -ENOBUFS becomes 0 without IP_RECVERR). The server
  then sees only RTCP: receiver reports of 50-80 % loss and a NACK storm
  (~1000 NACKs a second, each answered by RTX into the same full link).
  It counts a viewer losing half of what it is sent as behind as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
from unittest import mock

import aiohttp
import aioice.ice
import psutil
import pytest
from aiortc import RTCSessionDescription

import netns
from serving import base_url, camera, serving
from whep_client import WhepViewer, missing_frames

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))

SLOW_TIMEOUT = 2
LIMITS = {"slow_viewer_timeout": SLOW_TIMEOUT, "viewer_queue_frames": 3}
# The small test pattern makes ~250 kbit/s at 320x240; 100 kbit/s carries
# under half of it.
CAP = ("tbf", "rate", "100kbit", "burst", "16kbit")
# 1 MB of queue: over the socket's send buffer (net.core.wmem_default, 208 KiB
# of skb truesize), so the socket backs up before the qdisc drops anything.
DEEP_QUEUE = ("limit", "1mb")
SHORT_QUEUE = ("latency", "50ms")  # drops after 50 ms of queue
WATCH_TIMEOUT = 20.0
FPS = 30
CLOSE_TIMEOUT = 10.0
RSS_GROWTH_MB = 5.0  # queues are bounded: nothing piles up for the slow viewer


async def connect_from_client_side(link: netns.Link, client: WhepViewer,
                                   http: aiohttp.ClientSession) -> None:
    """WhepViewer.connect, with the client's ICE sockets opened in the client
    namespace on the client's address: its media crosses the veth link."""
    client.pc.addTransceiver("video", direction="recvonly")
    offer = await client.pc.createOffer()
    with link.in_client(), mock.patch.object(aioice.ice, "get_host_addresses",
                                             lambda use_ipv4, use_ipv6: [link.client_ip]):
        await client.pc.setLocalDescription(offer)  # gathers: opens the sockets
    async with http.post(client.url, data=client.pc.localDescription.sdp,
                         headers={"Content-Type": "application/sdp"}) as response:
        body = await response.text()
        assert response.status == 201, f"{response.status}: {body}"
        client.location = response.headers["Location"]
    await client.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))


async def watch_slow_viewer(link: netns.Link, queue: tuple[str, ...],
                            watch: float = WATCH_TIMEOUT) -> dict:
    """Both viewers streaming, then the cap on the slow one's link; watched
    until the server drops it or `watch` seconds."""
    async with serving(camera(bitrate=1_000_000), limits=LIMITS,
                       address=link.server_ip) as server, aiohttp.ClientSession() as http:
        healthy = WhepViewer(base_url(server))  # in the server namespace: over lo
        await healthy.connect(http)
        slow = WhepViewer(base_url(server))
        await connect_from_client_side(link, slow, http)
        await asyncio.gather(healthy.wait_frames(10), slow.wait_frames(10))
        session = server.sessions.get("cam0", slow.location.rsplit("/", 1)[1])
        viewer = session.viewer
        netns.run(*netns.inside(link.server, "tc", "qdisc", "add", "dev",
                                link.server_veth, "root", *CAP, *queue))
        since = len(healthy.codes)
        started = time.monotonic()
        rss = []
        while time.monotonic() - started < watch and session.close_reason is None:
            rss.append(psutil.Process().memory_info().rss / 2**20)
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - started
        # The close completes (the registry counts it); the healthy viewer goes on.
        closing = time.monotonic()
        while (session.close_reason is not None and server.sessions.count() > 1
               and time.monotonic() - closing < CLOSE_TIMEOUT):
            await asyncio.sleep(0.1)
        closing = time.monotonic() - closing
        codes = healthy.codes[since:]
        result = {
            "elapsed": elapsed, "close_seconds": closing, "close_reason": session.close_reason,
            "disconnects": dict(server.sessions.disconnects),
            "sessions_left": server.sessions.count(),
            "skips_to_keyframe": viewer.skips_to_keyframe,
            "frames_skipped": viewer.frames_skipped, "frames_sent": viewer.frames_sent,
            "loss": viewer.loss, "nacks": viewer.nacks_received,
            "slow_frames_decoded": len(slow.codes),
            "healthy_fps": len(codes) / (elapsed + closing),
            "healthy_missing": missing_frames(codes),
            "rss_growth_mb": max(rss) - rss[0],
        }
        await healthy.hang_up(http)
        await slow.close()
    print(f"\n{' '.join(queue)}: {result}")
    return result


async def test_slow_viewer_skips_to_keyframes_then_is_dropped_and_others_keep_every_frame(caplog):
    caplog.set_level(logging.INFO, logger="rpistream.viewer")
    with netns.Link("sv") as link, link.in_server():
        result = await watch_slow_viewer(link, DEEP_QUEUE)
    assert result["close_reason"] is not None, f"the slow viewer was never dropped: {result}"
    assert result["close_reason"].startswith(f"behind for more than {SLOW_TIMEOUT} s"), result
    assert result["disconnects"] == {f"behind for more than {SLOW_TIMEOUT} s": 1}, result
    assert result["sessions_left"] == 1
    assert result["skips_to_keyframe"] > 0 and result["frames_skipped"] > 0, result
    assert any("disconnected: behind for more than" in r.getMessage() for r in caplog.records)
    # The healthy viewer kept the full rate through it all.
    assert result["healthy_fps"] > 0.9 * FPS, result
    assert result["healthy_missing"] <= 3, result
    assert result["rss_growth_mb"] < RSS_GROWTH_MB, result


async def test_viewer_behind_a_dropping_bottleneck_is_dropped():
    with netns.Link("sd") as link, link.in_server():
        result = await watch_slow_viewer(link, SHORT_QUEUE, watch=5 * SLOW_TIMEOUT)
    # The healthy viewer is unharmed either way.
    assert result["healthy_fps"] > 0.9 * FPS and result["healthy_missing"] <= 3, result
    assert result["close_reason"] is not None, f"the slow viewer was never dropped: {result}"
