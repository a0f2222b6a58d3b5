"""Publishing over WHIP (RFC 9725): a camera's forward of type "whip" to an
independent WHIP receiver built on GStreamer's webrtcbin
(tests/gst_whip_server.py), in a network namespace of its own across a veth
pair. The receiver decodes what it gets; the block codes show every frame
arrived in order. The link is cut and mended (nftables), and the publisher
publishes again by itself."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import pytest

import netns
from gstreamer import SYSTEM_PYTHON, decoded_codes, unavailable
from serving import base_url, camera, serving
from waiting import until

pytestmark = [
    pytest.mark.skipif(netns.available() is not None, reason=str(netns.available())),
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

RECEIVER = Path(__file__).with_name("gst_whip_server.py")
PORT = 8089
TOKEN = "whip-test-token-0123456789"


@contextlib.contextmanager
def whip_receiver(link: netns.Link, directory: Path, codec: str, token: str = TOKEN):
    """The receiver in the link's client namespace: (its URL, its frames file,
    a function that reads its /status)."""
    out = directory / "received.y"
    log = open(directory / "receiver.log", "w")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        netns.inside(link.client, SYSTEM_PYTHON, str(RECEIVER), "--address", link.client_ip,
                     "--port", str(PORT), "--codec", codec, "--out", str(out),
                     "--token", token, "--lifetime", "300"),
        stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on "), (directory / "receiver.log").read_text()
        url = f"http://{link.client_ip}:{PORT}/whip"

        def status() -> dict:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://{link.client_ip}:{PORT}/status", timeout=5) as response:
                return json.load(response)

        yield url, out, status
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        print((directory / "receiver.log").read_text()[-3000:])


def whip_forward(url: str, directory: Path, token: str = TOKEN) -> dict:
    token_file = directory / "whip-token"
    token_file.write_text(token + "\n")
    return {"type": "whip", "url": url, "bearer_token_file": str(token_file)}


def frame_numbers(out: Path) -> list[int]:
    return [number for number, _ in filter(None, decoded_codes(out))] if out.exists() else []


def assert_in_order(numbers: list[int], gaps: int = 3) -> None:
    steps = np.diff(numbers)
    assert (steps > 0).all(), f"frame numbers not increasing: {numbers}"
    assert int((steps > 1).sum()) <= gaps, f"gaps in the frame numbers: {numbers}"


async def test_a_camera_published_to_a_gstreamer_whip_receiver(tmp_path):
    with netns.Link("wp") as link, link.in_server(), \
            whip_receiver(link, tmp_path, "h264") as (url, out, status):
        async with serving(camera("cam0", "h264", forward=[whip_forward(url, tmp_path)]),
                           address=link.server_ip) as server, aiohttp.ClientSession() as http:
            (forwarder,) = server.forwards
            await until(lambda: len(frame_numbers(out)) >= 90, "90 frames decoded at the receiver",
                        timeout=30)
            stats = forwarder.stats()
            async with http.get(base_url(server) + "/api/stats") as response:
                (listed,) = (await response.json())["forwards"]
            async with http.get(base_url(server) + "/metrics") as response:
                metrics = await response.text()
        # The server stopped: the publish was DELETEd at the receiver.
        received = status()
    numbers = frame_numbers(out)
    assert_in_order(numbers)
    assert stats["state"] == "forwarding" and stats["frames_sent"] >= 90, stats
    assert stats["resource"].startswith(url + "/"), stats
    assert listed["type"] == "whip" and listed["target"] == url, listed
    assert f'rpistream_forward_up{{camera="cam0",target="{url}"}} 1.0' in metrics
    assert received["posts"] == 1 and received["deletes"] == 1, received
    (session,) = received["sessions"]
    assert session["state"] == "deleted" and "H264" in session["codecs"], session
    assert "rtx" in session["codecs"], session  # NACKs are answered with RTX


async def test_the_publisher_publishes_again_after_the_link_is_cut(tmp_path):
    """VP8, whose FEC is RED+ULPFEC, which webrtcbin answers too. The link
    cut both ways: the receiver's reports stop, the publisher ends the
    publish and tries again with backoff until the link is mended, then
    publishes by itself; the frames go on in order after the gap."""
    with netns.Link("wr") as link, link.in_server(), \
            whip_receiver(link, tmp_path, "vp8") as (url, out, status):
        async with serving(camera("cam0", "vp8", forward=[whip_forward(url, tmp_path)]),
                           address=link.server_ip) as server:
            (forwarder,) = server.forwards
            await until(lambda: len(frame_numbers(out)) >= 30, "frames before the cut",
                        timeout=30)
            first = forwarder.stats()
            link.cut()
            await until(lambda: forwarder.stats()["state"] != "forwarding",
                        "the publisher to see the link is gone", timeout=30)
            dropped = forwarder.stats()
            before = frame_numbers(out)
            await until(lambda: forwarder.attempts >= 2, "an attempt while the link is cut",
                        timeout=30)
            link.cut(False)
            await until(lambda: forwarder.stats()["restarts"] == 1, "a new publish", timeout=40)
            await until(lambda: len(frame_numbers(out)) >= len(before) + 30,
                        "frames after the link came back", timeout=20)
            stats = forwarder.stats()
        received = status()
    numbers = frame_numbers(out)
    after = numbers[len(before):]
    assert first["fec"] == "ulpfec", first
    assert dropped["error"].startswith("the publish dropped: no RTCP from the receiver"), dropped
    assert stats["state"] == "forwarding", stats
    assert stats["attempts"] >= 2, stats
    assert_in_order(before)
    assert_in_order(after)
    assert after[0] > before[-1], (before[-5:], after[:5])
    assert received["posts"] == 2, received
    assert [s["state"] for s in received["sessions"]][-1] == "deleted", received
    assert {"VP8", "red", "ulpfec"} <= set(received["sessions"][-1]["codecs"]), received


async def test_a_refused_token_is_said_and_the_server_serves(tmp_path):
    with netns.Link("wt") as link, link.in_server(), \
            whip_receiver(link, tmp_path, "h264") as (url, out, status):
        forward = whip_forward(url, tmp_path, token="not-the-receivers-token")
        async with serving(camera("cam0", "h264", forward=[forward]),
                           address=link.server_ip) as server:
            (forwarder,) = server.forwards
            await until(lambda: forwarder.error is not None, "the publish to fail", timeout=20)
            stats = forwarder.stats()
        received = status()
    assert stats["error"] == f"{url} refused the token (401): check bearer_token_file", stats
    assert stats["state"] in ("waiting", "connecting"), stats
    assert received["posts"] == 0 and not received["sessions"], received
    assert not frame_numbers(out)
