"""Hostile clients: hypothesis-made SDP bodies (random text, real offers
mutated), wrong content types, huge bodies, malformed HTTP, unknown sessions,
bad trickle fragments and bad tokens against every route. The server must
answer each with a 4xx and one line of text — never a 5xx, never a traceback
(not even in its log) — while a viewer connected the whole time keeps
receiving frames, and no session is left behind.

The server and that viewer run in an event loop on a thread of their own, for
the whole module; hypothesis drives plain blocking HTTP requests at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
import threading
import time
import urllib.parse

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpistream.web.auth import AccessToken
from serving import base_url, camera, serving
from waiting import until
from whep_client import MAX_CODES, WhepViewer

pytestmark = [
    pytest.mark.timeout(120),
    # The server's thread (aiortc, aioice) uses the random module while
    # hypothesis draws in this one; hypothesis sees the state change and warns.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module"
                               ":hypothesis.errors.HypothesisDeprecationWarning"),
]

TOKEN = "hostile-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
MAX_BODY = 16384
LIMITS = {
    "max_body_bytes": MAX_BODY,
    # One client makes every request; the rate limit has its own tests.
    "offer_burst": 1000, "offers_per_minute": 6000,
    "ice_timeout": 5,  # an offer that slipped through unanswered is reaped soon
}
# Each test is bounded in examples; the file stays well under a minute.
FAST = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
# Frames the viewer must receive after each test: a third of a second at 30 fps.
FRAMES_AFTER = 10

# Chromium's recvonly offer (Debian chromium 14x, trimmed to one codec of
# each kind), with its candidate moved to 127.0.0.1.
CHROMIUM_OFFER = "\r\n".join([
    "v=0", "o=- 1288491745271464089 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
    "a=group:BUNDLE 0", "a=extmap-allow-mixed", "a=msid-semantic: WMS",
    "m=video 40914 UDP/TLS/RTP/SAVPF 96 97 102 103 108 109 118 119 120 49",
    "c=IN IP4 127.0.0.1", "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:2049674033 1 udp 2113937151 127.0.0.1 40914 typ host generation 0 "
    "network-cost 999",
    "a=ice-ufrag:0Fag", "a=ice-pwd:MO9GBcNqmuSjGSyKE9ePjuTu", "a=ice-options:trickle",
    "a=fingerprint:sha-256 CB:32:73:6E:14:E0:E8:24:65:13:52:F0:0A:98:C6:8D:E9:81:50:7D:93:"
    "3B:E9:9C:30:15:7D:AD:B0:16:77:C9",
    "a=setup:actpass", "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:toffset",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=recvonly", "a=rtcp-mux", "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 goog-remb", "a=rtcp-fb:96 transport-cc",
    "a=rtcp-fb:96 ccm fir", "a=rtcp-fb:96 nack", "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000", "a=rtcp-fb:102 nack", "a=rtcp-fb:102 nack pli",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:103 rtx/90000", "a=fmtp:103 apt=102",
    "a=rtpmap:108 H264/90000", "a=rtcp-fb:108 nack", "a=rtcp-fb:108 nack pli",
    "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:109 rtx/90000", "a=fmtp:109 apt=108",
    "a=rtpmap:118 red/90000", "a=rtpmap:119 rtx/90000", "a=fmtp:119 apt=118",
    "a=rtpmap:120 ulpfec/90000",
    "a=rtpmap:49 flexfec-03/90000", "a=fmtp:49 repair-window=10000000",
]) + "\r\n"


class Running:
    """The server and a viewer of it, on an event loop in another thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stack = contextlib.AsyncExitStack()
        self.server = self.call(self.stack.enter_async_context(
            serving(camera("cam0"), limits=LIMITS, server={"token": TOKEN})))
        self.host, self.port = "127.0.0.1", self.server.port
        self.http = self.call(self._session())
        self.viewer = self.call(self._viewer())
        self.offer = self.call(_aiortc_offer())

    def call(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _session(self):
        return await self.stack.enter_async_context(aiohttp.ClientSession(headers=AUTH))

    async def _viewer(self):
        viewer = WhepViewer(base_url(self.server))
        await viewer.connect(self.http)
        await viewer.wait_frames(FRAMES_AFTER)
        return viewer

    def close(self):
        try:
            assert self.call(self.viewer.hang_up(self.http)) == 200
            self.call(until(lambda: self.server.sessions.count() == 0, "no sessions left"))
        finally:
            self.call(self.stack.aclose())
            self.call(_cancel_the_rest())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def sessions(self) -> int:
        return self.call(_count(self.server))

    def check_healthy(self) -> None:
        """Health 200, the viewer still receiving advancing frames, and no
        session but the viewer's."""
        status, text = send(self, "GET", "/healthz")
        assert status == 200, text
        viewer = self.viewer
        frames, last = viewer.frames, viewer.codes[-1][0]
        if len(viewer.codes) > MAX_CODES - 4 * FRAMES_AFTER:
            viewer.codes.clear()  # it keeps at most MAX_CODES: make room to see progress
        deadline = time.monotonic() + 10
        while viewer.frames < frames + FRAMES_AFTER or not viewer.codes:
            assert time.monotonic() < deadline, "the viewer stopped receiving frames"
            time.sleep(0.05)
        assert viewer.codes[-1][0] > last, "the viewer's frame numbers do not advance"
        self.call(until(lambda: self.server.sessions.count() == 1, "one session"))


async def _cancel_the_rest() -> None:
    """aiortc's leftover tasks of closed peers, so the loop closes clean."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _count(server) -> int:
    return server.sessions.count()


async def _aiortc_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.fixture(scope="module")
def running():
    running = Running()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def healthy(running):
    """The module's server, checked healthy after the test."""
    yield running
    running.check_healthy()


def exchange(running: Running, method: str, path: str, body: bytes = b"",
             headers: dict | None = None) -> tuple[int, str, http.client.HTTPMessage]:
    connection = http.client.HTTPConnection(running.host, running.port, timeout=15)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace"), response.headers
    finally:
        connection.close()


def send(running: Running, method: str, path: str, body: bytes = b"",
         headers: dict | None = None) -> tuple[int, str]:
    return exchange(running, method, path, body, headers)[:2]


def refused(running: Running, status: int, text: str, allowed=range(400, 500)) -> None:
    """A client error with a short text, no traceback; a session a mutated
    offer happened to open (201) is hung up at once."""
    assert status in allowed, (status, text[:500])
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
    if status >= 400:  # ours are one line; aiohttp's own for malformed HTTP a few
        assert len(text) < 500, text[:500]


def post(running, body: bytes, content_type: str | None = SDP, camera_name="cam0"):
    headers = {**AUTH, **({"Content-Type": content_type} if content_type is not None else {})}
    status, text, response_headers = exchange(running, "POST", f"/cameras/{camera_name}/whep",
                                              body, headers)
    if status == 201:  # a mutation that left a valid offer: hang it up
        assert send(running, "DELETE", response_headers["Location"], headers=AUTH)[0] == 200
    return status, text


# ── strategies ───────────────────────────────────────────────────────────────

GARBAGE = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["a=", "m=", "m=video", "m=video 9", "a=rtpmap:", "a=rtpmap:96",
                     "a=fmtp:96 apt=", "a=rtcp-fb:*", "a=ssrc:", "a=candidate:",
                     "a=fingerprint:sha-256", "a=setup:", "a=mid:", "a=extmap:",
                     "a=extmap:999999999999 x", "c=IN IP4", "o=", "v=1", "t=", "b=AS:",
                     "a=rtpmap:96 VP8", "a=rtpmap:300 VP8/90000", "a=rtpmap:x VP8/90000",
                     "a=rtpmap:96 VP8/notanumber", "a=fmtp:102 profile-level-id=zz",
                     "a=group:BUNDLE 5", "a=msid:", "a=ssrc-group:FID", "a=sctpmap:",
                     "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
                     "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=sendrecv", "a=inactive",
                     "a=ice-ufrag:", "a=ice-pwd:", "a=rtcp:x", "\x00", "\ufeff"]),
)
LINE_ENDINGS = st.sampled_from(["\r\n", "\n", "\r", "\n\r", " \r\n", "\r\r\n"])


@st.composite
def mutated_offers(draw, aiortc_offer: str) -> bytes:
    """A real offer with lines dropped, duplicated, truncated, swapped,
    garbage inserted, values garbled or made huge; any line ending."""
    text = draw(st.sampled_from([aiortc_offer, CHROMIUM_OFFER]))
    lines = text.split("\r\n")[:-1]
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        op = draw(st.sampled_from(["drop", "duplicate", "truncate", "insert", "huge",
                                   "swap", "value"]))
        if not lines:
            lines.append(draw(GARBAGE))
        elif op == "drop":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "truncate":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        elif op == "insert":
            lines.insert(i, draw(GARBAGE))
        elif op == "huge":
            lines[i] = lines[i] + "x" * draw(st.integers(100, MAX_BODY // 2))
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:  # keep the key, garble the value
            key, sep, _ = lines[i].partition(":" if lines[i].startswith("a=") else "=")
            lines[i] = key + (sep or "=") + draw(st.text(max_size=40))
    return draw(LINE_ENDINGS).join(lines).encode("utf-8", "surrogatepass")


# ── bodies ───────────────────────────────────────────────────────────────────


@FAST
@given(body=st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(
    lambda t: t.encode("utf-8", "surrogatepass"))))
def test_random_bodies(healthy, body):
    refused(healthy, *post(healthy, body))


@settings(FAST, max_examples=600)
@given(data=st.data())
def test_mutated_offers(healthy, data):
    body = data.draw(mutated_offers(healthy.offer), label="body")
    # A mutation may leave a valid offer: 201, hung up at once by post().
    refused(healthy, *post(healthy, body), allowed=[*range(400, 500), 201])


def test_the_unmutated_offers_are_accepted(healthy):
    for offer in (healthy.offer, CHROMIUM_OFFER):
        assert post(healthy, offer.encode())[0] == 201


def _edit(offer: str, edit) -> bytes:
    return ("\r\n".join(edit(offer.split("\r\n")[:-1])) + "\r\n").encode()


def test_offers_that_were_answered_500(healthy):
    """What hypothesis found; each was a 500 before the fix in session.py."""
    video = lambda lines: next(i for i, line in enumerate(lines) if line.startswith("m=video"))
    cases = [
        # aiortc's setRemoteDescription: ValueError
        (lambda ls: [x for x in ls if x != "a=rtcp-mux"],
         "the offer cannot be negotiated (ValueError: RTCP mux is not enabled)"),
        # aiortc's setLocalDescription: AttributeError on a duplicate mid
        (lambda ls: ls + ls[video(ls):],
         "the offer's m= sections must each have their own a=mid"),
        # aiortc's setLocalDescription: "Media sections in answer do not match offer"
        (lambda ls: ["a=mid" if x.startswith("a=mid:") else x for x in ls],
         "the offer has an a=mid line without a value"),
        # aiortc's codec matching: int(None) for a parameter without a value
        (lambda ls: "\r\n".join(ls).replace("packetization-mode=1", "packetization-mode",
                                              1).split("\r\n"),
         "the offer cannot be negotiated (TypeError"),
    ]
    for edit, message in cases:
        for offer in (healthy.offer, CHROMIUM_OFFER):
            status, text = post(healthy, _edit(offer, edit))
            assert status == 400 and text.startswith(message) and text.count("\n") == 1, text
    # A client's huge value is not echoed back whole.
    status, text = post(healthy, _edit(healthy.offer, lambda ls: [
        "a=setup:" + "x" * 10000 if x.startswith("a=setup:") else x for x in ls]))
    assert status == 400 and text.endswith("xxx...)\n") and len(text) < 200, text


@FAST
@given(content_type=st.one_of(
    st.sampled_from(["text/plain", "application/json", "application/sdp+x", "application/",
                     "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                     "application/trickle-ice-sdpfrag", "*/*", "", ";", "application/sdp;;;=",
                     # CPython's email parser, under aiohttp's content_type, raises on these
                     "application/sdp;x*", "text/plain;x*0*"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60)))
def test_wrong_content_types(healthy, content_type):
    status, text = post(healthy, healthy.offer.encode(), content_type)
    if content_type.split(";")[0].strip().lower() == SDP:
        refused(healthy, status, text, allowed=[*range(400, 500), 201])
    else:
        refused(healthy, status, text)


@settings(FAST, max_examples=8)
@given(size=st.integers(MAX_BODY + 1, 4 * 2**20))
def test_huge_bodies(healthy, size):
    status, text = post(healthy, b"a" * size)
    assert status == 413, (status, text)
    refused(healthy, status, text)


def test_no_content_type_and_no_body(healthy):
    for body, content_type in ((b"", SDP), (b"", None), (healthy.offer.encode(), None)):
        refused(healthy, *post(healthy, body, content_type))


# Requests aiohttp's parser refuses before any handler runs.
AUTH_LINE = f"Authorization: Bearer {TOKEN}\r\n".encode()
MALFORMED_HTTP = {
    "bad Content-Length": b"GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    "bad header name": b"GET /healthz HTTP/1.1\r\nBad Header\x01: y\r\n\r\n",
    "header over 8 KiB": b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    "two Content-Lengths": b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\n"
                           b"Content-Length: 2\r\n\r\nab",
    "bad chunk size": b"POST /cameras/cam0/whep HTTP/1.1\r\n" + AUTH_LINE
                      + b"Content-Type: application/sdp\r\nTransfer-Encoding: chunked\r\n"
                      b"\r\nzz\r\n\r\n",
    "chunk longer than said": b"POST /cameras/cam0/whep HTTP/1.1\r\n" + AUTH_LINE
                              + b"Content-Type: application/sdp\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcdefghij\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED_HTTP.values(), ids=MALFORMED_HTTP.keys())
def test_malformed_http_is_answered_400_and_logged_in_one_line(healthy, caplog, request_bytes):
    caplog.set_level(logging.WARNING, logger="aiohttp.server")
    with socket.create_connection((healthy.host, healthy.port), timeout=10) as connection:
        connection.sendall(request_bytes)
        status_line = connection.makefile("rb").readline()
    assert status_line.split()[1] == b"400", status_line
    healthy.call(until(lambda: any(r.name == "aiohttp.server" for r in caplog.records),
                       "aiohttp's log line"))
    (record,) = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage().startswith("malformed HTTP request from 127.0.0.1, answered 400: ")


# ── sessions and routes ──────────────────────────────────────────────────────

SEGMENTS = st.text(min_size=1, max_size=40).map(lambda s: urllib.parse.quote(s, safe=""))


@FAST
@given(camera_name=st.one_of(st.just("cam0"), SEGMENTS), session=SEGMENTS,
       method=st.sampled_from(["PATCH", "DELETE", "OPTIONS", "GET", "POST", "PUT"]),
       body=st.binary(max_size=300))
def test_unknown_sessions_and_cameras(healthy, camera_name, session, method, body):
    headers = {**AUTH, "Content-Type": TRICKLE}
    status, text = send(healthy, method, f"/cameras/{camera_name}/whep/{session}", body, headers)
    refused(healthy, status, text, allowed=[*range(400, 500)] + ([204] if method == "OPTIONS"
                                                                  and camera_name == "cam0" else []))


CANDIDATE = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"


@st.composite
def trickle_fragments(draw) -> bytes:
    lines = draw(st.lists(st.one_of(
        st.just("a=mid:0"), st.just(CANDIDATE), GARBAGE,
        st.builds(lambda fields: "a=candidate:" + " ".join(fields),
                  st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
                      ["1", "udp", "tcp", "typ", "host", "srflx", "relay", "raddr", "rport",
                       "127.0.0.1", "::1", "-1", "99999999999999999999", "tcptype", "9"])),
                      max_size=12)),
        st.builds(lambda c, n: c[:n], st.just(CANDIDATE), st.integers(0, len(CANDIDATE)))),
        max_size=6))
    return draw(LINE_ENDINGS).join(lines).encode("utf-8", "surrogatepass")


@settings(FAST, max_examples=150)
@given(fragment=trickle_fragments())
def test_trickle_fragments_against_a_live_session(healthy, fragment):
    status, text, headers = exchange(healthy, "POST", "/cameras/cam0/whep",
                                     healthy.offer.encode(), {**AUTH, "Content-Type": SDP})
    assert status == 201, text
    location = headers["Location"]
    try:
        status, text = send(healthy, "PATCH", location, fragment,
                            {**AUTH, "Content-Type": TRICKLE})
        refused(healthy, status, text, allowed=[*range(400, 500), 204])
    finally:
        assert send(healthy, "DELETE", location, headers=AUTH)[0] == 200


# ── tokens ───────────────────────────────────────────────────────────────────

HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=255), max_size=80)


def routes(running) -> list[tuple[str, str]]:
    out = []
    for route in running.server.app.router.routes():
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter") or info.get("prefix") + "/viewer.js"
        path = path.replace("{camera}", "cam0").replace("{session}", "x")
        if route.method != "HEAD" and path != "/healthz":
            out.append((route.method, path))
    return sorted(set(out))


@FAST
@given(token=HEADER_TEXT, where=st.sampled_from(["bearer", "scheme", "cookie", "query"]),
       data=st.data())
def test_bad_tokens_against_every_route(healthy, token, where, data):
    if token == TOKEN:
        return
    method, path = data.draw(st.sampled_from(routes(healthy)))
    headers = {"Content-Type": SDP}
    cookie_name = AccessToken(TOKEN).cookie_name
    if where == "bearer":
        headers["Authorization"] = f"Bearer {token}"
    elif where == "scheme":
        headers["Authorization"] = token
    elif where == "cookie":
        headers["Cookie"] = f"{cookie_name}={token}"
    else:
        path += "?" + urllib.parse.urlencode({"token": token})
    body = healthy.offer.encode() if method == "POST" else b""
    status, text = send(healthy, method, path, body, headers)
    # 401; or 400 when the header itself is malformed HTTP (aiohttp refuses
    # it before any handler).
    refused(healthy, status, text, allowed=[401, 400])
    assert healthy.sessions() == 1

