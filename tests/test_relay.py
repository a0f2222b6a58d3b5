"""Watching from outside the network: the viewer in one namespace, the camera
server in another, no route between them; both reach a relay host where
coturn runs and a TCP forwarder stands in for the port forward or reverse
proxy that carries HTTP (tests/netns.py Relayed). In Chromium the viewer page
plays only through the TURN relay: with static credentials, with
time-limited ones, and over TCP when the viewer's UDP is blocked; wrong or
expired credentials fail with a message naming the TURN server and why. A
viewer that uses no TURN server plays through the server's own relay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import chromium
import netns
import turn
from rpistream.webrtc.ice_servers import turn_rest_credentials
from serving import camera, serving

pytestmark = [
    pytest.mark.skipif(netns.available() is not None, reason=str(netns.available())),
    pytest.mark.skipif(not chromium.available(), reason="Debian's chromium is not installed"),
    pytest.mark.skipif(not turn.available(), reason="coturn is not installed"),
]

TOKEN = "a-token-for-the-turn-browser-tests"
SECRET = "the-secret-coturn-and-rpistream-share"
TURN_PORT = 3478
TLS_PORT = 5349  # RFC 8656 §3.1: TURN over TLS
HTTP_PORT = 8080
FORWARDER = Path(__file__).parent / "tcp_forward.py"
WHEP_CLIENT = Path(__file__).parent / "whep_client.py"
PLAY_TIMEOUT_MS = 30_000
# Chromium gives up on ICE with no pair that answers after about 10-30 s.
FAIL_TIMEOUT_MS = 60_000
PICTURE = {"width": 320, "height": 240}


def player(label="cam0") -> str:
    return f"window.rpistream?.players?.[{label!r}]"


@contextlib.asynccontextmanager
async def relayed_camera(tmp_path, ice_servers: list[dict], *, secret: bool = True,
                         block_viewer_udp: bool = False, tls: bool = False):
    """cam0 served across the relay host: yields (net, server, url), the URL
    the viewer's namespace reaches it at. `ice_servers` as in the config;
    `secret`: coturn takes the shared secret (else the static user "viewer",
    "static password")."""
    auth = {"secret": SECRET} if secret else {"user": ("viewer", "static password")}
    with netns.Relayed("t") as net, \
            turn.coturn(tmp_path, net.service_ip, port=TURN_PORT,
                        prefix=netns.inside(net.relay), tls_port=TLS_PORT if tls else None,
                        **auth):
        if block_viewer_udp:
            net.block_viewer_udp()
        with net.in_camera():
            async with serving(camera("cam0", "h264", **PICTURE), address=net.camera_ip,
                               server={"token": TOKEN, "ice_servers": ice_servers}) as server:
                forwarder = subprocess.Popen(
                    netns.inside(net.relay, sys.executable, str(FORWARDER), net.service_ip,
                                 str(HTTP_PORT), net.camera_ip, str(server.port)),
                    stdout=subprocess.PIPE, text=True)
                try:
                    assert forwarder.stdout.readline().strip() == "ready"
                    yield net, server, f"http://{net.service_ip}:{HTTP_PORT}"
                finally:
                    forwarder.kill()
                    forwarder.wait()


@contextlib.asynccontextmanager
async def relayed_page(tmp_path, ice_servers: list[dict], **options):
    """The viewer page for cam0 open in Chromium across the relay host;
    yields (page, server)."""
    async with relayed_camera(tmp_path, ice_servers, **options) as (net, server, url):
        home = tmp_path / "home"
        if options.get("tls"):
            # Chromium checks a TURN server's certificate (RFC 8656 §3.1's
            # TLS is the web's): this one is trusted in the viewer's NSS
            # database, as a CA-issued one would be by the system's roots.
            trust_in_nss(home, tmp_path / "turn-cert.pem")
        wrapper = net.viewer_wrapper(tmp_path, str(chromium.CHROMIUM), env={"HOME": str(home)})
        async with chromium.chromium(tmp_path / "profile", wrapper, net.service_ip) as browser:
            page = await browser.new_page()
            await page.goto(f"{url}/?camera=cam0&token={TOKEN}")
            yield page, server


def trust_in_nss(home: Path, certificate: Path) -> None:
    """`certificate` trusted for TLS in the NSS database under `home`, which
    Chromium on Linux reads ($HOME/.pki/nssdb)."""
    if shutil.which("certutil") is None:
        pytest.skip("certutil is not installed (libnss3-tools)")
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{database}", "--empty-password"], check=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{database}", "-n", "rpistream-test-turn",
                    "-t", "P,,", "-i", str(certificate)], check=True)


def turn_urls(ip_placeholder: str = "{ip}") -> list[str]:
    return [f"turn:{ip_placeholder}:{TURN_PORT}?transport=udp",
            f"turn:{ip_placeholder}:{TURN_PORT}?transport=tcp"]


def ice_servers(service_ip: str, **credentials) -> list[dict]:
    return [{"urls": [u.format(ip=service_ip) for u in turn_urls()], **credentials}]


async def plays_through_the_relay(page) -> dict:
    """Wait until the page shows frames over a relay; its player's info."""
    await page.wait_for_function(
        f"{player()}?.frames.length > 10 && {player()}.stats.route?.startsWith('relay')",
        timeout=PLAY_TIMEOUT_MS)
    return await page.evaluate(player())


def service_ip() -> str:
    return netns.Relayed("t").service_ip  # the addresses are the process's, fixed


@pytest.mark.parametrize("credentials", ["static", "time-limited"])
async def test_the_page_plays_through_the_turn_relay(tmp_path, credentials):
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(SECRET)
    given = ({"username": "viewer", "credential": "static password"} if credentials == "static"
             else {"secret_file": str(secret_file)})
    async with relayed_page(tmp_path, ice_servers(service_ip(), **given),
                            secret=credentials != "static") as (page, server):
        info = await plays_through_the_relay(page)
        assert info["connects"] == 1, info  # the ICE servers came before the offer
        assert info["stats"]["route"].startswith("relay (TURN over udp)"), info["stats"]
        (session,) = server.sessions.sessions.values()
        assert session.viewer.stats()["frames_sent"] > 10


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_turn_over_tcp_or_tls_plays_when_the_viewer_has_no_udp(tmp_path, transport):
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(SECRET)
    servers = ice_servers(service_ip(), secret_file=str(secret_file))
    if transport == "tls":  # the only way: TLS
        servers[0]["urls"] = [f"turns:{service_ip()}:{TLS_PORT}?transport=tcp"]
    async with relayed_page(tmp_path, servers, block_viewer_udp=True,
                            tls=transport == "tls") as (page, _):
        info = await plays_through_the_relay(page)
        assert info["stats"]["route"].startswith(f"relay (TURN over {transport})"), info["stats"]


@pytest.mark.parametrize("wrong", ["secret", "expired"])
async def test_wrong_or_expired_credentials_fail_with_a_message_naming_the_turn_server(
        tmp_path, wrong):
    if wrong == "secret":
        secret_file = tmp_path / "turn-secret"
        secret_file.write_text("not-the-secret-coturn-has")
        given = {"secret_file": str(secret_file)}
    else:  # credentials minted an hour ago for a lifetime of ten minutes
        username, credential = turn_rest_credentials(SECRET, "rpistream", 600,
                                                     now=time.time() - 3600)
        given = {"username": username, "credential": credential}
    async with relayed_page(tmp_path, ice_servers(service_ip(), **given)) as (page, _):
        await page.wait_for_function(f"{player()}?.error?.includes('refused the credentials')",
                                     timeout=FAIL_TIMEOUT_MS)
        info = await page.evaluate(player())
        message = await page.text_content(".message")
    assert info["state"] in ("retrying", "failed") and not info["frames"], info
    assert f"the TURN server turn:{service_ip()}:{TURN_PORT}" in info["error"], info
    assert "refused the credentials" in message, message


def nominated_candidate_type(session) -> str | None:
    """The server's side of a session's selected pair: "host", "relay"..."""
    connection = session.pc.getTransceivers()[0].receiver.transport.transport._connection
    pair = connection._nominated.get(1)  # component 1: RTP (and RTCP, muxed)
    return pair.local_candidate.type if pair is not None else None


async def test_the_server_relays_for_a_viewer_that_uses_no_turn_server(tmp_path):
    """An aiortc viewer in a process of its own in the viewer's namespace,
    with no ICE servers: its only candidate is its own address, which the
    camera cannot reach, so the server's own relay candidate is the only way."""
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(SECRET)
    async with relayed_camera(tmp_path, ice_servers(service_ip(),
                                                    secret_file=str(secret_file))) \
            as (net, server, url):
        viewer = await asyncio.create_subprocess_exec(
            *netns.inside(net.viewer, sys.executable, str(WHEP_CLIENT),
                          f"{url}/cameras/cam0/whep", "--frames", "60", "--token", TOKEN),
            stdout=subprocess.PIPE)
        types = set()
        while viewer.returncode is None:
            types |= {nominated_candidate_type(s) for s in server.sessions.sessions.values()}
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(viewer.wait(), 0.2)
        result = json.loads((await viewer.stdout.read()).decode())
    assert viewer.returncode == 0 and result["frames"] >= 60, result
    assert result["hang_up"] == 200 and result["missing"] <= 2, result
    assert "relay" in types, types
