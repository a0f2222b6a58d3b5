"""Janus (Debian's janus 1.1) run by a test in a network namespace, with one
streaming-plugin RTP mountpoint for H.264, and a viewer of it built on
aiortc that talks Janus's HTTP API (create, attach, watch, start) and reads
the block codes of what it decodes.

Janus gathers no loopback candidates: it runs in a namespace of its own,
reached over a veth pair (tests/netns.py Link).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp
from aiortc import RTCSessionDescription

from whep_client import WhepViewer

JANUS = "/usr/bin/janus"
LIBDIR = Path("/usr/lib/x86_64-linux-gnu/janus")
HTTP_PORT = 8088
MOUNTPOINT = 1
VIDEO_PORT, VIDEO_RTCP_PORT, VIDEO_PT = 5004, 5005, 96
START_TIMEOUT = 20.0
REQUEST_TIMEOUT = 10.0
KEEP = {"plugins": {"libjanus_streaming.so"}, "transports": {"libjanus_http.so"}}


def available() -> bool:
    return shutil.which(JANUS) is not None and (LIBDIR / "plugins").exists()


def _disabled(kind: str) -> str:
    return ",".join(sorted(p.name for p in (LIBDIR / kind).glob("libjanus_*.so")
                           if p.name not in KEEP[kind]))


def write_config(directory: Path, address: str) -> Path:
    """Janus's configuration: HTTP API on `address`, only the streaming
    plugin, one H.264 mountpoint receiving RTP and RTCP on `address`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{directory}"
    plugins_folder = "{LIBDIR / 'plugins'}"
    transports_folder = "{LIBDIR / 'transports'}"
    events_folder = "{LIBDIR / 'events'}"
    loggers_folder = "{LIBDIR / 'loggers'}"
    debug_level = 4
}}
nat: {{
    ice_ignore_list = "vmnet"
}}
plugins: {{
    disable = "{_disabled('plugins')}"
}}
transports: {{
    disable = "{_disabled('transports')}"
}}
events: {{
    broadcast = false
}}
""")
    (directory / "janus.transport.http.jcfg").write_text(f"""
general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {HTTP_PORT}
    https = false
}}
admin: {{
    admin_http = false
}}
""")
    (directory / "janus.plugin.streaming.jcfg").write_text(f"""
rpistream: {{
    type = "rtp"
    id = {MOUNTPOINT}
    description = "rpistream camera"
    audio = false
    video = true
    videoport = {VIDEO_PORT}
    videortcpport = {VIDEO_RTCP_PORT}
    videoiface = "{address}"
    videopt = {VIDEO_PT}
    videocodec = "h264"
    videofmtp = "profile-level-id=42e01f;packetization-mode=1"
}}
""")
    return directory / "janus.jcfg"


@contextlib.contextmanager
def janus(directory: Path, address: str, prefix: tuple[str, ...] = ()):
    """Janus listening on `address` (its HTTP API on HTTP_PORT), run with
    `prefix` (netns.inside()); yields the API's base URL. Its log is
    directory/janus.log."""
    config = write_config(directory / "janus-config", address)
    log = directory / "janus.log"
    # ICE on `address` only, named as the host's own (-i), which it would
    # otherwise guess, and may guess wrong inside a namespace.
    process = subprocess.Popen([*prefix, JANUS, "-F", str(config.parent), "-C", str(config),
                                "-L", str(log), "-o", "-i", address, "-E", address],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://{address}:{HTTP_PORT}/janus"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"janus ended:\n{_tail(log)}"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/info", timeout=1):
                    break
            assert time.monotonic() < deadline, f"janus is not answering:\n{_tail(log)}"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path) -> str:
    return log.read_text()[-3000:] if log.exists() else ""


class JanusViewer(WhepViewer):
    """A viewer of the mountpoint through Janus's HTTP API (Janus offers, we
    answer); decodes and reads block codes like WhepViewer."""

    def __init__(self, janus_url: str, read_codes: bool = True):
        super().__init__(janus_url, read_codes=read_codes)
        self.janus_url = janus_url
        self.session_url: str | None = None
        self.handle_url: str | None = None

    async def _request(self, http, url: str, body: dict) -> dict:
        body = {**body, "transaction": secrets.token_hex(6)}
        async with http.post(url, json=body,
                             timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as response:
            reply = await response.json(content_type=None)
        assert reply.get("janus") in ("success", "ack"), reply
        return reply

    async def _event(self, http) -> dict:
        """The next event on the session (long poll), skipping keepalives."""
        while True:
            async with http.get(self.session_url + "?maxev=1",
                                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT + 30)) as response:
                event = await response.json(content_type=None)
            if event.get("janus") != "keepalive":
                return event

    async def connect(self, http) -> None:
        created = await self._request(http, self.janus_url, {"janus": "create"})
        self.session_url = f"{self.janus_url}/{created['data']['id']}"
        attached = await self._request(http, self.session_url,
                                       {"janus": "attach", "plugin": "janus.plugin.streaming"})
        self.handle_url = f"{self.session_url}/{attached['data']['id']}"
        await self._request(http, self.handle_url, {"janus": "message",
                                                    "body": {"request": "watch",
                                                             "id": MOUNTPOINT}})
        while "jsep" not in (event := await self._event(http)):
            assert event.get("janus") in ("event", "webrtcup", "media"), event
        await self.pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        answer = self.pc.localDescription
        await self._request(http, self.handle_url, {
            "janus": "message", "body": {"request": "start"},
            "jsep": {"type": answer.type, "sdp": answer.sdp, "trickle": False}})

    async def hang_up(self, http) -> int:
        if self.session_url is not None:
            await self._request(http, self.session_url, {"janus": "destroy"})
        await self.close()
        return 200
