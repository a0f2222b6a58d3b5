"""Firefox (Debian's firefox-esr, driven through Marionette): the viewer page
and a bare WHEP page play, what Firefox negotiates (RED+ULPFEC and RTX for
VP8), and how it rides out loss, measured like the Chromium FEC test.

Firefox makes H.264 for WebRTC with Cisco's OpenH264 plugin, which it
downloads on first use; nothing here can download it (and Debian does not
package it), so Firefox offers no H.264 here. The H.264 test checks what
the page then says, or, where the plugin is present, that it plays.

Marionette is a blocking client: it runs in a worker thread, so the server
in the test's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import firefox
import netns
from serving import base_url, camera, serving
from test_fec_browser import PHASE_SECONDS, frozen_ms, shown

pytestmark = pytest.mark.skipif(not firefox.available(),
                                reason="Debian's firefox-esr or marionette-driver is missing")

PAGE = Path(__file__).parent / "pages" / "whep.html"
PLAY_TIMEOUT = 30.0
PLAYERS = "window.wrappedJSObject.rpistream.players"


def wait_for(client, script: str, what: str, timeout: float = PLAY_TIMEOUT):
    """Poll `script` (returning a value) in the page until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = client.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}: "
                                 f"{client.execute_script(f'return {PLAYERS}')}")
        time.sleep(0.25)


def offered_codecs(client) -> list[str]:
    """The video codecs Firefox puts in a recvonly offer."""
    sdp = client.execute_async_script("""
        const [resolve] = arguments;
        const pc = new RTCPeerConnection();
        pc.addTransceiver("video", { direction: "recvonly" });
        pc.createOffer().then((offer) => { pc.close(); resolve(offer.sdp); });
    """)
    return sorted({line.split(" ", 1)[1].split("/")[0] for line in sdp.splitlines()
                   if line.startswith("a=rtpmap:")})


async def drive(work, *args):
    """Run the blocking Marionette `work(*args)` in a worker thread."""
    return await asyncio.to_thread(work, *args)


async def test_the_viewer_page_plays_vp8_with_red_ulpfec_and_rtx(tmp_path):
    async with serving(camera("cam0", "vp8")) as server:
        url = base_url(server)
        loop = asyncio.get_running_loop()

        async def server_side():
            (session,) = server.sessions.sessions.values()
            return session.viewer.stats(), session.viewer.params.rtx_payload_type

        def watch():
            with firefox.firefox(tmp_path / "profile") as client:
                client.navigate(f"{url}/?camera=cam0")
                wait_for(client, f"return {PLAYERS}.cam0?.frames.length > 60",
                         "60 frames presented")
                # While Firefox is still there: its page hangs up when it goes.
                viewer = asyncio.run_coroutine_threadsafe(server_side(), loop).result(10)
                return client.execute_script(f"return {PLAYERS}.cam0"), offered_codecs(client), \
                    viewer

        info, offered, (viewer, rtx) = await drive(watch)
    numbers = [f["frame"] for f in info["frames"]]
    assert numbers == sorted(numbers) and numbers[-1] - numbers[0] + 1 - len(numbers) <= 3
    assert info["stats"]["codec"] == "VP8" and info["connects"] == 1, info
    assert {"red", "ulpfec", "rtx"} <= set(offered), offered
    # Firefox offers RED+ULPFEC and no FlexFEC: VP8 gets RED+ULPFEC (docs/DESIGN.md §6).
    assert viewer["fec"] == "ulpfec" and viewer["fec_packets_sent"] > 0, viewer
    assert rtx is not None


async def test_h264_plays_with_openh264_and_is_refused_clearly_without(tmp_path):
    async with serving(camera("cam0", "h264")) as server:
        url = base_url(server)

        def watch():
            with firefox.firefox(tmp_path / "profile") as client:
                offered = offered_codecs(client)
                client.navigate(f"{url}/?camera=cam0")
                if "H264" in offered:
                    wait_for(client, f"return {PLAYERS}.cam0?.frames.length > 30", "30 frames")
                else:
                    wait_for(client, f"return {PLAYERS}.cam0?.state === 'failed'",
                             "the page's refusal")
                return client.execute_script(f"return {PLAYERS}.cam0"), offered

        info, offered = await drive(watch)
    if "H264" in offered:
        assert info["stats"]["codec"] == "H264", info
    else:
        assert "sends video/H264" in info["error"], info
        assert "offer that codec to watch this camera" in info["error"], info


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_a_bare_whep_page_on_another_origin_plays(tmp_path, codec):
    async with serving(camera("cam0", codec)) as server:
        whep = f"{base_url(server)}/cameras/cam0/whep"

        def watch():
            with firefox.firefox(tmp_path / "profile") as client:
                offered = offered_codecs(client)
                client.navigate(f"{PAGE.as_uri()}#{whep}")
                if codec.upper() not in offered:
                    return wait_for(client, "return window.wrappedJSObject.whep.error",
                                    "the server's refusal"), offered
                wait_for(client, "return window.wrappedJSObject.whep.frames > 60", "60 frames")
                return client.execute_script("return window.wrappedJSObject.whep"), offered

        result, offered = await drive(watch)
    if codec.upper() in offered:
        assert result["codec"] == f"video/{codec.upper()}" and result["error"] is None, result
    else:
        assert result.startswith("400: camera 'cam0' sends video/H264"), result


@pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
async def test_under_loss_fec_keeps_firefox_playing(tmp_path):
    """Two VP8 cameras side by side in Firefox's viewer page over a link that
    loses 5 % and 10 % of the packets, NACK answering off: the one with FEC
    shows more frames and freezes less (block codes from presented frames)."""
    picture = {"width": 640, "height": 480, "bitrate": 1_500_000, "retransmit": False}
    with netns.Link("fx") as link:
        with link.in_server():
            cameras = (camera("fec", "vp8", fec="auto", **picture),
                       camera("plain", "vp8", fec="off", **picture))
            async with serving(*cameras, address=link.server_ip) as server:
                url = f"http://{link.server_ip}:{server.port}/?camera=fec&camera=plain"

                def watch():
                    # Firefox, its Marionette port and this client's socket in
                    # the client namespace: a process started from a thread
                    # is in that thread's namespace.
                    with link.in_client(), firefox.firefox(tmp_path / "profile") as client:
                        client.navigate(url)
                        for label in ("fec", "plain"):
                            wait_for(client, f"return {PLAYERS}[{label!r}]?.frames.length > 30",
                                     f"{label} playing")
                        results = {}
                        for loss in (5, 10):
                            link.loss(loss)
                            since = client.execute_script("return Date.now()")
                            time.sleep(PHASE_SECONDS)
                            until = client.execute_script("return Date.now()")
                            for label in ("fec", "plain"):
                                codes = client.execute_script(
                                    f"return {PLAYERS}[arguments[0]].frames"
                                    ".filter(f => f.presentedMs >= arguments[1])",
                                    script_args=(label, since))
                                stats = client.execute_script(
                                    f"return {PLAYERS}[arguments[0]].stats",
                                    script_args=(label,))
                                results[loss, label] = {
                                    "shown": shown(codes),
                                    "frozen_ms": frozen_ms(codes, since, until),
                                    "lost": stats["packetsLost"]}
                        link.loss(0)
                        # While Firefox is still there: its page hangs up when it goes.
                        return results, asyncio.run_coroutine_threadsafe(
                            fec_viewer_stats(), loop).result(10)

                async def fec_viewer_stats():
                    return next(s.viewer.stats() for s in server.sessions.sessions.values()
                                if s.camera.name == "fec")

                loop = asyncio.get_running_loop()
                results, fec_viewer = await drive(watch)
    for (loss, label), figures in sorted(results.items()):  # shown with pytest -s
        print(f"firefox vp8 {loss:>2} % loss, {label:>5}: {figures}")
    assert fec_viewer["fec"] == "ulpfec" and fec_viewer["fec_packets_sent"] > 0
    for loss in (5, 10):
        fec, plain = results[loss, "fec"], results[loss, "plain"]
        assert fec["lost"] > 0 and plain["lost"] > 0, "the link really lost packets"
        assert fec["shown"] > plain["shown"], (loss, results)
        assert fec["frozen_ms"] < plain["frozen_ms"], (loss, results)
