"""TURN servers in the config, on loopback: what the server hands viewers
(Link headers, before the offer and with the answer, only with the access
token), credentials that coturn itself accepts or refuses, and WHEP sessions
whose server side allocates a relay. Through a relay across network
namespaces, in Chromium: tests/test_chromium_turn.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from aioice import stun, turn as aioice_turn

import turn
from rpistream.config import parse_config, read_secrets
from rpistream.webrtc.ice_servers import (SessionIceServer, link_header, parse_link_header,
                                          session_ice_servers, turn_rest_credentials)
from serving import base_url, camera, serving
from whep_client import WhepViewer

pytestmark = pytest.mark.skipif(not turn.available(), reason="coturn is not installed")

SECRET = "a-turn-secret-shared-with-coturn"
TOKEN = "a-turn-test-token-of-some-length"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ICE_JS = Path(__file__).parent.parent / "rpistream" / "web" / "static" / "ice.js"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (TURN listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


async def allocate(port: int, username: str, credential: str, transport: str = "udp"):
    """A TURN allocation at coturn with these credentials (aioice's client):
    the relayed address, or the STUN error coturn answered."""
    try:
        relay, _ = await aioice_turn.create_turn_endpoint(
            asyncio.DatagramProtocol, ("127.0.0.1", port), username, credential,
            transport=transport)
    except stun.TransactionFailed as exc:
        return exc.response.attributes["ERROR-CODE"][0]
    address = relay.get_extra_info("sockname")
    relay.close()
    return address


def turn_config(port: int, secret_file: Path | None = None) -> list[dict]:
    urls = [f"turn:127.0.0.1:{port}?transport=udp", f"turn:127.0.0.1:{port}?transport=tcp"]
    if secret_file is None:
        return [{"urls": urls, "username": "viewer", "credential": "a static password"}]
    return [{"urls": urls, "secret_file": str(secret_file)}]


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "turn-secret"
    path.write_text(SECRET + "\n")
    return path


async def test_minted_credentials_are_what_coturn_accepts_until_they_expire(tmp_path,
                                                                          secret_file):
    port = free_port()
    config = read_secrets(parse_config({"server": {"ice_servers": turn_config(port, secret_file)}}),
                          "test")
    (server,) = session_ice_servers(config.server.ice_servers)
    expiry, name = server.username.split(":")
    assert name == "rpistream" and abs(int(expiry) - (time.time() + 86400)) < 5
    with turn.coturn(tmp_path, "127.0.0.1", port=port, secret=SECRET):
        for transport in ("udp", "tcp"):
            relayed = await allocate(port, server.username, server.credential, transport)
            assert relayed[0] == "127.0.0.1", relayed
        assert await allocate(port, *turn_rest_credentials("not-the-secret-at-all!", "rpistream",
                                                           3600)) == 401
        expired = turn_rest_credentials(SECRET, "rpistream", 600, now=time.time() - 3600)
        assert await allocate(port, *expired) == 401


@pytest.mark.parametrize("credentials", ["static", "time-limited"])
async def test_viewers_get_the_turn_servers_before_offering_and_the_server_relays_too(
        tmp_path, secret_file, credentials):
    port = free_port()
    static = credentials == "static"
    ice_servers = turn_config(port, None if static else secret_file)
    auth = {"user": ("viewer", "a static password")} if static else {"secret": SECRET}
    with turn.coturn(tmp_path, "127.0.0.1", port=port, **auth):
        async with serving(camera(), server={"token": TOKEN, "ice_servers": ice_servers}) \
                as server, aiohttp.ClientSession(headers=BEARER) as http:
            url = base_url(server) + "/cameras/cam0/whep"
            async with aiohttp.ClientSession() as stranger:
                async with stranger.options(url) as response:
                    assert response.status == 401 and "Link" not in response.headers
                async with stranger.options(url, headers={
                        "Origin": "http://elsewhere.example",
                        "Access-Control-Request-Method": "POST"}) as response:
                    assert response.status == 204 and "Link" not in response.headers
            async with http.options(url) as response:
                assert response.status == 204
                links = response.headers["Link"]
            servers = parse_in_node([links])[0]
            assert [s["urls"] for s in servers] == ice_servers[0]["urls"]
            for offered in servers:
                transport = offered["urls"].rsplit("=", 1)[1]
                relayed = await allocate(port, offered["username"], offered["credential"],
                                         transport)
                assert relayed[0] == "127.0.0.1", (offered, relayed)
            viewer = WhepViewer(base_url(server))
            await viewer.connect(http)
            assert "typ relay" in viewer.pc.remoteDescription.sdp  # the server's own relay
            await viewer.wait_frames(10)
            assert await viewer.hang_up(http) == 200
    log = (tmp_path / "turnserver.log").read_text()
    assert "SECRET" not in log  # nothing of ours leaks into coturn's log either
    assert SECRET not in log


def parse_in_node(headers: list[str]) -> list[list[dict]]:
    """The page's own parser (rpistream/web/static/ice.js) run by node on each header."""
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH: the page's parser cannot run here")
    script = (f'import {{ parseIceServers }} from "{ICE_JS.as_uri()}";\n'
              f"const headers = {json.dumps(headers)};\n"
              "console.log(JSON.stringify(headers.map(parseIceServers)));\n")
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_pages_parser_reads_every_link_the_server_writes():
    servers = [
        SessionIceServer(("stun:stun.example.org:3478",)),
        SessionIceServer(("turn:t.example.org?transport=udp", "turns:t.example.org:5349"),
                         'name "quoted", with \\ and ;', "c+/=="),
    ]
    (parsed,) = parse_in_node([link_header(servers)])
    assert parsed == [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": "turn:t.example.org?transport=udp", "username": 'name "quoted", with \\ and ;',
         "credential": "c+/=="},
        {"urls": "turns:t.example.org:5349", "username": 'name "quoted", with \\ and ;',
         "credential": "c+/=="},
    ]
    assert link_header([]) is None


def test_the_whip_publisher_reads_ice_servers_from_link_headers():
    """The publisher's parser (an endpoint's Link headers, RFC 9725 §4.6) reads
    what the server writes, and skips links of other relations."""
    servers = [SessionIceServer(("turn:t.example.org?transport=udp", "turns:t:5349"),
                                'name "quoted", with \\ and ;', "c+/==")]
    (server,) = servers
    assert parse_link_header([link_header(servers)]) == [
        SessionIceServer((url,), server.username, server.credential) for url in server.urls]
    assert parse_link_header(['<https://x.example.org/>; rel="next", '
                              '<stun:s.example.org:3478>; rel=ice-server', "garbage"]) == [
        SessionIceServer(("stun:s.example.org:3478",))]
