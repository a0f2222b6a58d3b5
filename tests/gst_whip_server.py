#!/usr/bin/python3
"""A WHIP receiver (RFC 9725) built on GStreamer's webrtcbin: a second WebRTC
stack, independent of aiortc and of browsers, for the tests of rpistream's WHIP
publisher.

Runs under Debian's /usr/bin/python3 (python3-gi and GStreamer's typelibs; the
test virtualenv has no `gi`), never imports rpistream, and keeps all media on
one address, A, which is also where it listens (a network namespace's address,
or 127.0.0.1):

    gst_whip_server.py --address A --port P --codec h264|vp8 --out FILE
                       [--token T] [--ice-server URL ...]
                       [--ice-username U --ice-credential C] [--lifetime S]

Endpoints, all on http://A:P:

- POST /whip, Content-Type application/sdp: a sendonly offer with one video
  m-line and every ICE candidate in it (no trickle). Each POST gets a pipeline
  and webrtcbin of its own (max-bundle); the answer is recvonly, with NACK/RTX
  and, when the offer has both red and ulpfec, RED + ULPFEC, and is sent once
  ICE gathering is complete: 201 Created, Location /whip/<id>, one
  `Link: <URL>; rel="ice-server"` header per --ice-server (RFC 9725 §4.6).
  401 (WWW-Authenticate: Bearer) without `Authorization: Bearer T` when --token
  is given, 415 for another content type, 411 without Content-Length, 413 for
  a body past MAX_BODY, 400 for an offer that does not parse or that this
  receiver cannot take, 503 past MAX_SESSIONS.
- OPTIONS /whip: 204 with the same Link headers (and the same token check).
- DELETE /whip/<id>: 200, the session's pipeline set to NULL and dropped; 404
  for an unknown or already ended id. PATCH (trickle ICE) is 405.
- GET /status: JSON `{"posts": n, "deletes": n, "sessions": [{"id", "state",
  "frames", "codecs", "rtx_requests", "rtx_packets", "fec_recovered",
  "fec_unrecovered"}, ...]}`: the POSTs answered 201 and the DELETEs answered
  200, and every session ever made, in order; state is
  webrtcbin's connection state (new, connecting, connected, disconnected,
  failed, closed) while the session lives, then "deleted", "failed" (torn down
  after its connection failed) or "stopped" (at exit); codecs are the
  encoding names the answer negotiated, e.g. ["H264", "rtx", "red", "ulpfec"];
  the counters are webrtcbin's rtprtxreceive (NACKs sent, RTX packets taken)
  and rtpulpfecdec (packets recovered, or not), null without that element.

Each decoded frame's luma plane is appended to FILE, from every session in
arrival order, as records of ``width:u16le height:u16le`` followed by
width*height bytes (no row padding), as tests/gst_whep_client.py writes them.

Once listening it prints `listening on http://A:P/whip` to stdout; it logs one
line per event to stderr, starting "gst_whip_server: ". It runs until SIGTERM
or SIGINT, tears every session down and exits 0; 1 when it cannot start, 2 for
bad arguments, 3 when a watchdog has to end it (a teardown that hangs, or
--lifetime seconds gone by: a test that loses track of it must not leave it
running for ever).
"""

from __future__ import annotations

import argparse
import hmac
import http.server
import json
import os
import secrets
import signal
import struct
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

from gst_nice import Failed, candidate_addresses, restrict_nice_to_address  # noqa: E402

DECODERS = {"h264": "rtph264depay request-keyframe=true ! avdec_h264",
            "vp8": "rtpvp8depay request-keyframe=true ! vp8dec"}
# A test runs one publisher, which reconnects at most once or twice; four lets
# an old session linger (its DELETE lost, its connection not yet failed) while
# a new one starts, and keeps a runaway publisher to four decoders on a 2-CPU
# test machine.
MAX_SESSIONS = 4
# An offer from aiortc with every candidate is 2-4 KiB; browsers' are under
# 16 KiB. 64 KiB is room for any real offer and no room for abuse.
MAX_BODY = 64 * 1024
# Each of setRemoteDescription, createAnswer, setLocalDescription and ICE
# gathering (host candidates on one address: milliseconds) must finish in this;
# it is a bound against a stuck webrtcbin, far past what any of them takes.
NEGOTIATION_SECONDS = 10
# The socket timeout of every HTTP connection: a client that stops sending
# mid-request frees its thread after this. A test's requests take milliseconds.
REQUEST_TIMEOUT = 10
# Past SIGTERM: setting at most MAX_SESSIONS pipelines to NULL takes well under
# a second; past this, something is stuck and the process just ends.
SHUTDOWN_SECONDS = 10
DEFAULT_LIFETIME = 600  # seconds; the longest test that would use this runs ~1 min


class BadOffer(Exception):
    """The offer is not one this receiver can answer: 400."""


def log(message: str) -> None:
    print(f"gst_whip_server: {message}", file=sys.stderr, flush=True)


# --- SDP -------------------------------------------------------------------------

def media_attributes(media: GstSdp.SDPMedia) -> list[tuple[str, str]]:
    return [(media.get_attribute(i).key, media.get_attribute(i).value or "")
            for i in range(media.attributes_len())]


def rtpmaps(media: GstSdp.SDPMedia) -> dict[int, str]:
    """Payload type → encoding name, as the a=rtpmap lines spell it."""
    names = {}
    for key, value in media_attributes(media):
        if key == "rtpmap" and " " in value:
            pt, encoding = value.split(" ", 1)
            if pt.isdigit():
                names[int(pt)] = encoding.split("/")[0]
    return names


def fmtps(media: GstSdp.SDPMedia) -> dict[int, dict[str, str]]:
    params = {}
    for key, value in media_attributes(media):
        if key == "fmtp" and " " in value:
            pt, rest = value.split(" ", 1)
            if pt.isdigit():
                params[int(pt)] = dict(
                    (item.split("=", 1) + [""])[:2]
                    for item in (part.strip() for part in rest.split(";")) if item)
    return params


def parse_sdp(text: str) -> GstSdp.SDPMessage:
    res, message = GstSdp.SDPMessage.new_from_text(text)
    if res != GstSdp.SDPResult.OK or message.medias_len() == 0:
        raise BadOffer("the body is not an SDP offer with media")
    return message


class Offer:
    """What this receiver takes from an offer: its one video m-line, the payload
    type to decode, and whether it offers RED + ULPFEC."""

    def __init__(self, text: str, codec: str):
        self.message = parse_sdp(text)
        medias = [self.message.get_media(i) for i in range(self.message.medias_len())]
        if [media.get_media() for media in medias] != ["video"]:
            raise BadOffer("this receiver takes offers of exactly one video m-line, not "
                           f"{[media.get_media() for media in medias]}")
        media = medias[0]
        if media.get_port() == 0:
            raise BadOffer("the video m-line is rejected (port 0)")
        directions = {key for key, _ in media_attributes(media)} & {
            "sendrecv", "sendonly", "recvonly", "inactive"}
        if directions & {"recvonly", "inactive"}:
            raise BadOffer(f"a WHIP offer sends video; this one is {sorted(directions)}")
        names = rtpmaps(media)
        params = fmtps(media)
        upper = {pt: name.upper() for pt, name in names.items()}
        if codec == "h264":
            # RFC 6184 §8.1: a depayloader takes packetization-mode 1 (FU-A, STAP-A);
            # the camera's constrained baseline first, any other profile after it.
            usable = [pt for pt, name in upper.items()
                      if name == "H264" and params.get(pt, {}).get("packetization-mode") == "1"]
            usable.sort(key=lambda pt: params[pt].get("profile-level-id", "").lower() != "42e01f")
        else:
            usable = [pt for pt, name in upper.items() if name == "VP8"]
        if not usable:
            raise BadOffer(f"the offer has no {codec} this receiver decodes "
                           f"(offered: {sorted(set(names.values()))})")
        self.payload_type = usable[0]
        self.fec = "RED" in upper.values() and "ULPFEC" in upper.values()
        self.encoding_name = names[self.payload_type].upper()
        # webrtcbin's answer leaves the offer's profile-level-id out (it takes it
        # for optional); the transceiver's codec preferences put it back.
        self.profile = params.get(self.payload_type, {}).get("profile-level-id")


# --- sessions --------------------------------------------------------------------

# The counters of webrtcbin's receive path that show NACK/RTX and ULPFEC at work:
# (factory, property, key in /status).
COUNTERS = [("rtprtxreceive", "num-rtx-requests", "rtx_requests"),
            ("rtprtxreceive", "num-rtx-packets", "rtx_packets"),
            ("rtpulpfecdec", "recovered", "fec_recovered"),
            ("rtpulpfecdec", "unrecovered", "fec_unrecovered")]


def receive_counters(pipeline: Gst.Pipeline | None) -> dict:
    """COUNTERS summed over the pipeline's elements; None where there is no
    such element (no RTX or no ULPFEC negotiated, or no pipeline yet)."""
    counters = dict.fromkeys((key for _, _, key in COUNTERS), None)
    if pipeline is None:
        return counters
    elements = []
    iterator = pipeline.iterate_recurse()
    while True:
        result, element = iterator.next()
        if result == Gst.IteratorResult.RESYNC:
            iterator.resync()
            elements.clear()
        elif result == Gst.IteratorResult.OK:
            elements.append(element)
        else:
            break
    for element in elements:
        factory = element.get_factory()
        for name, prop, key in COUNTERS:
            if factory is not None and factory.get_name() == name:
                counters[key] = (counters[key] or 0) + element.get_property(prop)
    return counters


class Session:
    """One POST: a pipeline of its own, webrtcbin and a decoder per stream."""

    def __init__(self, server: Server, session_id: str, offer: Offer):
        self.server, self.id, self.offer = server, session_id, offer
        self.state = "new"
        self.frames = 0
        self.codecs: list[str] = []
        self.ended = False
        self.lock = threading.Lock()  # self.ended, and tearing down once
        self.gathered = threading.Event()
        self.final_counters = receive_counters(None)

        self.pipeline = Gst.Pipeline.new(f"whip-{session_id}")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        if self.webrtc is None:
            raise Failed("no webrtcbin (install gstreamer1.0-plugins-bad and gstreamer1.0-nice)")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.webrtc.set_property("stun-server", None)
        self.webrtc.set_property("turn-server", None)
        self.ice_objects = restrict_nice_to_address(self.webrtc, server.address)
        self.pipeline.add(self.webrtc)
        self.webrtc.connect("on-new-transceiver", self.on_new_transceiver)
        self.webrtc.connect("pad-added", self.on_pad_added)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering_state)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)
        self.bus = self.pipeline.get_bus()
        self.bus.add_signal_watch()
        self.bus.connect("message::error", self.on_bus_error)

    # -- negotiation (in the POST's HTTP thread)

    def negotiate(self) -> str:
        """The answer SDP, with every candidate in it; BadOffer or Failed."""
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise Failed("the pipeline would not start")
        offer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER,
                                                       self.offer.message)
        reply = self.call("set-remote-description", offer)
        if reply is not None and reply.has_field("error"):
            raise BadOffer(f"webrtcbin refused the offer: {reply.get_value('error')}")
        reply = self.call("create-answer", None)
        answer = reply.get_value("answer") if reply and reply.has_field("answer") else None
        if answer is None:
            raise BadOffer("webrtcbin created no answer "
                           f"({reply.to_string() if reply else 'no reply'})")
        reply = self.call("set-local-description", answer)
        if reply is not None and reply.has_field("error"):
            raise Failed(f"webrtcbin refused its own answer: {reply.get_value('error')}")
        self.on_gathering_state(self.webrtc, None)  # it may have completed already
        if not self.gathered.wait(NEGOTIATION_SECONDS):
            raise Failed(f"ICE gathering not complete after {NEGOTIATION_SECONDS} s")
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        addresses = candidate_addresses(sdp)
        if not addresses or set(addresses) != {self.server.address}:
            raise Failed(f"the answer's ICE candidates are {addresses}, "
                         f"not {self.server.address} only")
        answer_message = parse_sdp(sdp)  # owns the media: keep it while it is read
        answer_media = answer_message.get_media(0)
        names = rtpmaps(answer_media)
        self.codecs = [names.get(int(answer_media.get_format(i)), "?")
                       for i in range(answer_media.formats_len())]
        return sdp

    def call(self, action: str, argument) -> Gst.Structure | None:
        """Emit one of webrtcbin's promise-taking action signals and wait for it."""
        replied = threading.Event()
        promise = Gst.Promise.new_with_change_func(lambda _promise: replied.set())
        self.webrtc.emit(action, argument, promise)
        if not replied.wait(NEGOTIATION_SECONDS):
            promise.interrupt()
            raise Failed(f"{action}: no reply from webrtcbin in {NEGOTIATION_SECONDS} s")
        return promise.get_reply()

    def on_new_transceiver(self, _webrtc, transceiver) -> None:
        """For the offer's video m-line (webrtcbin makes the transceiver while it
        takes the offer, before the answer): receive only, only the codec this
        receiver decodes, NACK with RTX, and RED + ULPFEC when offered."""
        transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY)
        caps = Gst.Caps.from_string(f"application/x-rtp,media=video,"
                                    f"payload={self.offer.payload_type},"
                                    f"encoding-name={self.offer.encoding_name}")
        if self.offer.profile:
            caps.set_value("profile-level-id", self.offer.profile)
        transceiver.set_property("codec-preferences", caps)
        transceiver.set_property("do-nack", True)
        if self.offer.fec:
            transceiver.set_property("fec-type", GstWebRTC.WebRTCFECType.ULP_RED)

    def on_gathering_state(self, webrtc, _pspec) -> None:
        if webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self.gathered.set()

    # -- state

    def on_connection_state(self, webrtc, _pspec) -> None:
        state = webrtc.get_property("connection-state")
        with self.lock:
            if self.ended:
                return
            self.state = state.value_nick
        log(f"session {self.id}: connection state {state.value_nick}")
        if state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            # Not from here: this is webrtcbin's own thread, which stopping it joins.
            GLib.idle_add(lambda: (self.server.end(self, "failed"), False)[1])

    def on_bus_error(self, _bus, message: Gst.Message) -> None:
        error, debug = message.parse_error()
        log(f"session {self.id}: GStreamer error from {message.src.get_name()}: "
            f"{error.message} ({debug})")
        self.server.end(self, "failed")  # on the main loop's thread: the bus watch

    def teardown(self, state: str) -> bool:
        """Set the pipeline to NULL and drop it; False if it was already ended."""
        with self.lock:
            if self.ended:
                return False
            self.ended = True
            self.state = state
        self.final_counters = receive_counters(self.pipeline)
        self.bus.remove_signal_watch()
        self.pipeline.set_state(Gst.State.NULL)
        with self.lock:
            self.pipeline = self.webrtc = self.bus = self.ice_objects = None
        return True

    def status(self) -> dict:
        with self.lock:
            pipeline, state = self.pipeline, self.state  # a reference: it stays valid
        counters = self.final_counters if pipeline is None else receive_counters(pipeline)
        return {"id": self.id, "state": state, "frames": self.frames,
                "codecs": list(self.codecs), **counters}

    # -- media (in the pipeline's streaming threads)

    def on_pad_added(self, _webrtc, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        bin_ = Gst.parse_bin_from_description(
            f"queue ! {DECODERS[self.server.codec]} ! videoconvert ! "
            "video/x-raw,format=GRAY8 ! "
            "appsink name=sink emit-signals=true sync=false max-buffers=8 drop=false",
            True)
        bin_.get_by_name("sink").connect("new-sample", self.on_sample)
        with self.lock:
            if self.ended:
                return
            pipeline = self.pipeline
        pipeline.add(bin_)
        bin_.sync_state_with_parent()
        if pad.link(bin_.get_static_pad("sink")) != Gst.PadLinkReturn.OK:
            log(f"session {self.id}: cannot link webrtcbin's {pad.get_name()} to the decoder")
        else:
            log(f"session {self.id}: receiving {pad.get_name()}")

    def on_sample(self, sink) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        structure = sample.get_caps().get_structure(0)
        width, height = structure.get_value("width"), structure.get_value("height")
        buffer = sample.get_buffer()
        ok, info = buffer.map(Gst.MapFlags.READ)
        if not ok:
            return Gst.FlowReturn.ERROR
        try:
            data = info.data
            stride = (width + 3) & ~3  # GRAY8 rows are 4-byte aligned in raw video
            plane = (bytes(data[:width * height]) if stride == width else
                     b"".join(data[row * stride:row * stride + width] for row in range(height)))
        finally:
            buffer.unmap(info)
        if self.ended:
            return Gst.FlowReturn.EOS
        if self.server.write_frame(width, height, plane):
            self.frames += 1
            if self.frames == 1:
                log(f"session {self.id}: first frame {width}x{height}")
        return Gst.FlowReturn.OK


# --- the server ------------------------------------------------------------------

class Server:
    def __init__(self, args: argparse.Namespace):
        self.address, self.port, self.codec = args.address, args.port, args.codec
        self.token = args.token
        self.links = [link_value(url, args.ice_username, args.ice_credential)
                      for url in args.ice_server]
        self.out = open(args.out, "wb")
        self.out_lock = threading.Lock()
        self.lock = threading.Lock()  # sessions, counters
        self.sessions: list[Session] = []
        self.by_id: dict[str, Session] = {}
        self.starting = 0  # POSTs negotiating: they hold a place under MAX_SESSIONS
        self.posts = self.deletes = 0
        self.stopping = False

    def write_frame(self, width: int, height: int, plane: bytes) -> bool:
        with self.out_lock:
            if self.out.closed:
                return False
            self.out.write(struct.pack("<HH", width, height) + plane)
            self.out.flush()
        return True

    def live(self) -> int:
        return sum(1 for session in self.sessions if not session.ended)

    def post(self, body: str) -> tuple[int, dict, bytes]:
        """The answer to a POST of `body` (status, headers, body)."""
        try:
            offer = Offer(body, self.codec)
        except BadOffer as exc:
            log(f"POST refused: {exc}")
            return 400, {}, f"{exc}\n".encode()
        with self.lock:
            if self.stopping:
                return 503, {}, b"shutting down\n"
            if self.live() + self.starting >= MAX_SESSIONS:
                return 503, {}, (f"{MAX_SESSIONS} sessions already: DELETE one first "
                                 f"(MAX_SESSIONS)\n").encode()
            self.starting += 1
        session = None
        try:
            session = Session(self, secrets.token_hex(8), offer)
            answer = session.negotiate()
        except Exception as exc:  # noqa: BLE001 (the session must go whatever went wrong)
            if session is not None:
                session.teardown("failed")
            if not isinstance(exc, (BadOffer, Failed)):
                exc = Failed(f"{type(exc).__name__}: {exc}")
            log(f"POST refused: {exc}")
            return (400 if isinstance(exc, BadOffer) else 500), {}, f"{exc}\n".encode()
        finally:
            with self.lock:
                self.starting -= 1
        with self.lock:
            self.sessions.append(session)
            self.by_id[session.id] = session
            self.posts += 1
            stopping = self.stopping
        if stopping:  # SIGTERM came while it negotiated; the shutdown did not see it
            session.teardown("stopped")
            return 503, {}, b"shutting down\n"
        log(f"session {session.id}: answered, codecs {session.codecs}")
        return 201, {"Content-Type": "application/sdp",
                     "Location": f"/whip/{session.id}"}, answer.encode()

    def delete(self, session_id: str) -> int:
        with self.lock:
            session = self.by_id.get(session_id)
        if session is None or not self.end(session, "deleted"):
            return 404
        with self.lock:
            self.deletes += 1
        return 200

    def end(self, session: Session, state: str) -> bool:
        ended = session.teardown(state)
        if ended:
            log(f"session {session.id}: ended ({state}, {session.frames} frames)")
        return ended

    def status(self) -> dict:
        with self.lock:
            return {"posts": self.posts, "deletes": self.deletes,
                    "sessions": [session.status() for session in self.sessions]}

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            sessions = list(self.sessions)
        for session in sessions:
            self.end(session, "stopped")
        with self.out_lock:
            self.out.close()


def quoted(value: str) -> str:
    """An RFC 9110 §5.6.4 quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def link_value(url: str, username: str | None, credential: str | None) -> str:
    """One RFC 9725 §4.6 Link header value; TURN URLs carry the credentials."""
    value = f'<{url}>; rel="ice-server"'
    if url.startswith(("turn:", "turns:")) and username is not None and credential is not None:
        value += (f"; username={quoted(username)}; credential={quoted(credential)}; "
                  'credential-type="password"')
    return value


# --- HTTP ------------------------------------------------------------------------

def make_handler(server: Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT
        server_version = "gst_whip_server"

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            log(f"{self.command} {self.path}: " + format % args)

        def reply(self, status: int, headers: dict | None = None, body: bytes = b"",
                  links: bool = False) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if links:
                for link in server.links:
                    self.send_header("Link", link)
            if body and not (headers or {}).get("Content-Type"):
                self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def authorized(self) -> bool:
            if server.token is None:
                return True
            given = self.headers.get("Authorization", "")
            expected = f"Bearer {server.token}"
            if hmac.compare_digest(given.encode(), expected.encode()):
                return True
            self.reply(401, {"WWW-Authenticate": "Bearer"}, b"a bearer token is required\n")
            return False

        def do_POST(self):
            if self.path != "/whip":
                return self.reply(404, body=b"POST to /whip\n")
            if not self.authorized():
                return
            content_type = self.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != "application/sdp":
                return self.reply(415, body=b"Content-Type must be application/sdp\n")
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                return self.reply(411, body=b"a Content-Length is required\n")
            if int(length) > MAX_BODY:
                return self.reply(413, body=f"offers are at most {MAX_BODY} bytes\n".encode())
            try:
                body = self.rfile.read(int(length)).decode()
            except UnicodeDecodeError:
                return self.reply(400, body=b"the offer is not UTF-8\n")
            status, headers, answer = server.post(body)
            self.reply(status, headers, answer, links=status == 201)

        def do_OPTIONS(self):
            if self.path != "/whip":
                return self.reply(404)
            if self.authorized():
                self.reply(204, {"Allow": "OPTIONS, POST"}, links=True)

        def do_DELETE(self):
            if not self.path.startswith("/whip/"):
                return self.reply(404)
            if self.authorized():
                self.reply(server.delete(self.path[len("/whip/"):]))

        def do_PATCH(self):
            # RFC 9725 §4.3.1: no trickle ICE here; everything is in the offer.
            self.reply(405, {"Allow": "DELETE"}, b"no trickle ICE: send a full offer\n")

        def do_GET(self):
            if self.path != "/status":
                return self.reply(404)
            self.reply(200, {"Content-Type": "application/json"},
                       json.dumps(server.status()).encode())

    return Handler


def exit_after(seconds: float, why: str) -> threading.Timer:
    """A thread that ends the process whatever the main thread does."""
    timer = threading.Timer(seconds, lambda: (log(f"FAILED: watchdog: {why}"), os._exit(3)))
    timer.daemon = True
    timer.start()
    return timer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True,
                        help="the one address for HTTP and ICE (e.g. 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--codec", choices=sorted(DECODERS), required=True)
    parser.add_argument("--out", required=True, help="file for the decoded luma planes")
    parser.add_argument("--token", help="require Authorization: Bearer TOKEN")
    parser.add_argument("--ice-server", action="append", default=[], metavar="URL",
                        help="announce URL in a Link header (repeatable)")
    parser.add_argument("--ice-username", help="username for the turn:/turns: URLs")
    parser.add_argument("--ice-credential", help="credential for the turn:/turns: URLs")
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME,
                        help="seconds after which the process ends itself (exit 3)")
    args = parser.parse_args()

    exit_after(args.lifetime, f"still running after {args.lifetime:g} s (--lifetime)")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    Gst.init(None)
    try:
        server = Server(args)
        httpd = http.server.ThreadingHTTPServer((args.address, args.port), make_handler(server))
    except OSError as exc:
        log(f"FAILED: cannot start: {exc}")
        return 1
    # The bus watches and the teardowns of failed sessions run on this loop.
    loop = GLib.MainLoop()
    threading.Thread(target=loop.run, name="glib", daemon=True).start()
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    print(f"listening on http://{args.address}:{args.port}/whip", flush=True)
    log(f"listening on http://{args.address}:{args.port}/whip ({args.codec})")
    while not stop.wait(1):  # the timeout lets Python run the signal handlers
        pass

    exit_after(SHUTDOWN_SECONDS, f"shutdown not done after {SHUTDOWN_SECONDS} s")
    log("stopping")
    httpd.shutdown()
    server.stop()
    loop.quit()
    status = server.status()
    log(f"stopped: {status['posts']} POSTs, {status['deletes']} DELETEs, "
        f"{sum(s['frames'] for s in status['sessions'])} frames")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown of GStreamer objects
