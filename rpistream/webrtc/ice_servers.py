"""ICE servers for one session: the configured STUN and TURN servers, with
TURN credentials minted for it where a shared secret is configured.

Time-limited TURN credentials follow the TURN REST API convention that
coturn's `use-auth-secret` checks (draft-uberti-behave-turn-rest-00):
the user name is "<expiry as a Unix time>:<name>", the credential is
base64(HMAC-SHA1(secret, user name)). The TURN server computes the same
HMAC from its copy of the secret and refuses a user name whose time has
passed, so rpistream and coturn share a secret and nothing else.

A session's servers reach the viewer in Link headers (RFC 9725 §4.6, which
the WHEP draft takes over) and the server's own ICE agent as aiortc's
RTCIceServer (aiortc uses the first STUN and the first TURN URL it can).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from aiortc import RTCIceServer


@dataclass(frozen=True)
class SessionIceServer:
    """One configured server as a session uses it: URLs, and credentials if TURN."""
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


def turn_rest_credentials(secret: str, name: str, lifetime_s: float,
                          now: float | None = None) -> tuple[str, str]:
    """(user name, credential) valid for `lifetime_s` seconds from `now`."""
    expiry = int((time.time() if now is None else now) + lifetime_s)
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


# The name in minted user names when the config gives none (coturn logs it).
DEFAULT_TURN_NAME = "rpistream"


def session_ice_servers(configured, now: float | None = None) -> list[SessionIceServer]:
    """The configured servers (config IceServer tables) for one new session:
    static credentials as they are, credentials minted where a secret is set."""
    servers = []
    for server in configured:
        if server.secret_file is not None:
            if server.secret is None:
                raise ValueError(f"TURN server {server.urls[0]}: its secret_file was not read "
                                 f"(rpistream.config.read_secrets)")
            username, credential = turn_rest_credentials(
                server.secret, server.username or DEFAULT_TURN_NAME,
                server.credential_lifetime, now)
        else:
            username, credential = server.username, server.credential
        servers.append(SessionIceServer(tuple(server.urls), username, credential))
    return servers


def _quoted(value: str) -> str:
    """An RFC 9110 §5.6.4 quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def link_header(servers: list[SessionIceServer]) -> str | None:
    """The servers as one Link header value, one link per URL (RFC 9725 §4.6):
    `<turn:host:3478?transport=udp>; rel="ice-server"; username="..."; credential="...";
    credential-type="password"`; None without servers."""
    links = []
    for server in servers:
        params = '; rel="ice-server"'
        if server.username is not None and server.credential is not None:
            params += (f"; username={_quoted(server.username)}; "
                       f"credential={_quoted(server.credential)}; credential-type=\"password\"")
        links += [f"<{url}>{params}" for url in server.urls]
    return ", ".join(links) or None


def rtc_ice_servers(servers: list[SessionIceServer]) -> list[RTCIceServer]:
    """The servers for aiortc: it takes a list of URLs, never a tuple."""
    return [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers]


# One link of a Link header (RFC 8288 §3): <URI> and its ;-separated
# parameters, whose values are tokens or quoted strings (RFC 9110 §5.6.4).
_LINK = re.compile(r'\s*<([^>]*)>((?:\s*;\s*[\w-]+\s*(?:=\s*(?:"(?:[^"\\]|\\.)*"|[^;,\s]*))?)*)')
_PARAM = re.compile(r';\s*([\w-]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^;,\s]*)))?')


def parse_link_header(values: list[str]) -> list[SessionIceServer]:
    """The ICE servers in Link header values (RFC 9725 §4.6), as a WHIP
    endpoint sends them: the inverse of link_header(), one server per link;
    links of other relations are skipped."""
    servers = []
    for value in values:
        for match in _LINK.finditer(value):
            params = {param[1].lower(): (re.sub(r"\\(.)", r"\1", param[2])
                                         if param[2] is not None else param[3])
                      for param in _PARAM.finditer(match.group(2))}
            if params.get("rel") == "ice-server":
                servers.append(SessionIceServer((match.group(1),), params.get("username"),
                                                params.get("credential")))
    return servers
