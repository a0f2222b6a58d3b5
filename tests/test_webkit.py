"""WebKit, Safari's engine, as Debian ships it (WebKitGTK through
WebKitWebDriver): where its build has WebRTC, the viewer page plays H.264
(what Safari receives from a Pi); where it has not, the page says so in
words instead of hanging at "Connecting…". Debian 12's WebKitGTK 2.50 has no
RTCPeerConnection even with its enable-webrtc setting on (README: "Other
browsers")."""

from __future__ import annotations

import asyncio
import time

import pytest

import webkit
from serving import base_url, camera, serving

pytestmark = pytest.mark.skipif(not webkit.available(),
                                reason="webkit2gtk-driver or Xvfb is not installed")

TIMEOUT = 30.0
PLAYER = "return window.rpistream?.players?.cam0"


async def test_the_viewer_page_plays_h264_or_says_the_browser_has_no_webrtc(tmp_path):
    async with serving(camera("cam0", "h264")) as server:
        url = base_url(server)

        def watch():
            with webkit.webkit(tmp_path) as browser:
                browser.navigate(f"{url}/?camera=cam0")
                has_webrtc = browser.execute("return typeof RTCPeerConnection") != "undefined"
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    info = browser.execute(PLAYER)
                    if info and (info["state"] == "failed" or len(info["frames"]) > 30):
                        break
                    time.sleep(0.25)
                return has_webrtc, info, browser.execute(
                    "return document.querySelector('.message').textContent")

        has_webrtc, info, message = await asyncio.to_thread(watch)
        sessions = server.sessions.count()
    print(f"WebKitGTK has RTCPeerConnection: {has_webrtc}; player: {info['state']}")
    if has_webrtc:
        assert len(info["frames"]) > 30 and info["stats"]["codec"] == "H264", info
    else:
        assert info["state"] == "failed" and sessions == 0, info
        assert "This browser cannot play WebRTC" in message, message
