#!/usr/bin/python3
"""A WHEP viewer built on GStreamer's webrtcbin: a second WebRTC stack, independent
of aiortc and of browsers, for tests/test_gstreamer_whep.py.

Runs under Debian's /usr/bin/python3 (python3-gi and GStreamer's typelibs; the
test virtualenv has no `gi`), never imports rpistream, and keeps all media on
127.0.0.1:

    gst_whep_client.py URL --codec h264|vp8 --seconds N --out FILE

It POSTs a recvonly offer to URL (WHEP, draft-ietf-wish-whep, which follows
WHIP, RFC 9725 §4.2; full ICE gathering first, no trickle), decodes the video, and writes each decoded frame's luma plane to FILE
as records of ``width:u16le height:u16le`` followed by width*height bytes (no row
padding), so the pytest side reads the block code with rpistream's own reader.
After N seconds of video it DELETEs the session (RFC 9725 §4.2) and exits 0.
On failure it prints one line starting "gst_whep_client: FAILED" to stderr and
exits 1 (2 for bad arguments, 3 when the watchdog has to end it).

Once negotiation has started, its last stdout line is a JSON report, on failure too: frames decoded, the offer and answer SDP,
the DTLS certificate webrtcbin used (PEM), the final connection state.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

from gst_nice import Failed, candidate_addresses, restrict_nice_to_address  # noqa: E402

LOOPBACK = "127.0.0.1"
PAYLOAD_TYPE = 96
CODECS = {
    # RFC 6184 §8.1: packetization-mode=1; constrained baseline 3.1 like the camera.
    "h264": ("encoding-name=H264,packetization-mode=(string)1,"
             "profile-level-id=(string)42e01f,level-asymmetry-allowed=(string)1",
             "rtph264depay ! avdec_h264"),
    "vp8": ("encoding-name=VP8", "rtpvp8depay ! vp8dec"),
}
# Past --seconds of video: negotiation, ICE and DTLS must fit in this.
SETUP_SECONDS = 15
HTTP_TIMEOUT = 10


def log(message: str) -> None:
    print(f"gst_whep_client: {message}", file=sys.stderr, flush=True)


# --- HTTP (WHEP) -----------------------------------------------------------------

def check_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if host != LOOPBACK:
        raise Failed(f"refusing to talk to {host!r}: this test client only uses {LOOPBACK}")


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    check_loopback(url)
    headers = {"Content-Type": "application/sdp"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    # No proxies: the request must go straight to 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError as exc:
        raise Failed(f"{method} {url} failed: {exc}") from None


# --- the client ------------------------------------------------------------------

class Client:
    def __init__(self, url: str, codec: str, seconds: float, out_path: str):
        self.url, self.codec, self.seconds = url, codec, seconds
        self.out = open(out_path, "wb")
        self.loop = GLib.MainLoop()
        self.error: str | None = None
        self.session_url: str | None = None
        self.offer_sdp = self.answer_sdp = ""
        self.frames = 0
        self.first_frame_at: float | None = None
        self.lock = threading.Lock()
        self.done = False

        self.pipeline = Gst.Pipeline.new("whep")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        if self.webrtc is None:
            raise Failed("no webrtcbin (install gstreamer1.0-plugins-bad and gstreamer1.0-nice)")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.webrtc.set_property("stun-server", None)
        self.webrtc.set_property("turn-server", None)
        self.ice_objects = restrict_nice_to_address(self.webrtc, LOOPBACK)
        self.pipeline.add(self.webrtc)
        self.webrtc.connect("pad-added", self.on_pad_added)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering_state)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)

        rtp_caps, _ = CODECS[codec]
        caps = Gst.Caps.from_string(f"application/x-rtp,media=video,payload={PAYLOAD_TYPE},"
                                    f"clock-rate=90000,{rtp_caps}")
        self.webrtc.emit("add-transceiver",
                         GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, caps)

        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_bus_error)

    # -- lifecycle

    def fail(self, message: str) -> None:
        """Record the first failure and stop the main loop (any thread)."""
        def stop():
            if self.error is None:
                self.error = message
            self.loop.quit()
            return False
        GLib.idle_add(stop)

    def finish(self) -> None:
        GLib.idle_add(lambda: (self.loop.quit(), False)[1])

    def run(self) -> dict:
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise Failed("the pipeline would not start")
        promise = Gst.Promise.new_with_change_func(self.on_offer_created)
        self.webrtc.emit("create-offer", None, promise)
        GLib.timeout_add(int((SETUP_SECONDS + self.seconds) * 1000), self.on_timeout)
        self.loop.run()
        report = self.report()
        self.teardown()
        report["error"] = self.error
        return report

    def on_timeout(self) -> bool:
        if self.frames:
            self.fail(f"only {self.frames} frames in {SETUP_SECONDS + self.seconds:.0f} s "
                      f"(connection state {self.connection_state()})")
        else:
            self.fail(f"no video within {SETUP_SECONDS + self.seconds:.0f} s "
                      f"(connection state {self.connection_state()}, "
                      f"ICE {self.webrtc.get_property('ice-connection-state').value_nick})")
        return False

    def teardown(self) -> None:
        with self.lock:
            self.done = True
        if self.session_url:
            status, _, body = http("DELETE", self.session_url)
            if status != 200 and self.error is None:
                self.error = f"DELETE {self.session_url} answered {status}: {body[:200]!r}"
        self.pipeline.set_state(Gst.State.NULL)
        self.out.close()

    def connection_state(self) -> str:
        return self.webrtc.get_property("connection-state").value_nick

    def report(self) -> dict:
        return {
            "frames": self.frames,
            "offer": self.offer_sdp,
            "answer": self.answer_sdp,
            "session_url": self.session_url,
            "connection_state": self.connection_state(),
            "certificate": self.dtls_certificate(),
        }

    def dtls_certificate(self) -> str | None:
        """The PEM certificate webrtcbin's DTLS used (its own, not the peer's)."""
        transceiver = self.webrtc.emit("get-transceiver", 0)
        receiver = transceiver.get_property("receiver") if transceiver else None
        transport = receiver.get_property("transport") if receiver else None
        return transport.get_property("certificate") if transport else None

    # -- negotiation

    def on_offer_created(self, promise: Gst.Promise) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            self.fail(f"webrtcbin created no offer ({reply.to_string() if reply else 'no reply'})")
            return
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())
        # The offer goes out in on_gathering_state, with every candidate in it.

    def on_gathering_state(self, webrtc, _pspec) -> None:
        if webrtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        GLib.idle_add(self.post_offer)

    def post_offer(self) -> bool:
        if self.session_url or self.error:
            return False
        try:
            self.offer_sdp = self.webrtc.get_property("local-description").sdp.as_text()
            addresses = candidate_addresses(self.offer_sdp)
            if not addresses or set(addresses) != {LOOPBACK}:
                raise Failed(f"the offer's ICE candidates are {addresses}, not {LOOPBACK} only")
            status, headers, body = http("POST", self.url, self.offer_sdp.encode())
            if status != 201:
                raise Failed(f"POST {self.url} answered {status}: {body[:300]!r}")
            location = headers.get("Location") or headers.get("location")
            if not location:
                raise Failed("the 201 answer has no Location header")
            self.session_url = urllib.parse.urljoin(self.url, location)
            check_loopback(self.session_url)
            self.answer_sdp = body.decode()
            res, message = GstSdp.SDPMessage.new_from_text(self.answer_sdp)
            if res != GstSdp.SDPResult.OK:
                raise Failed("cannot parse the answer SDP")
            answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER,
                                                            message)
            self.webrtc.emit("set-remote-description", answer,
                             Gst.Promise.new_with_change_func(self.on_answer_set))
        except Failed as exc:
            self.fail(str(exc))
        return False

    def on_answer_set(self, promise: Gst.Promise) -> None:
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            self.fail(f"webrtcbin refused the answer: {reply.get_value('error')}")

    def on_connection_state(self, webrtc, _pspec) -> None:
        state = webrtc.get_property("connection-state")
        log(f"connection state: {state.value_nick}")
        if state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            self.fail("the connection failed (ICE or DTLS)")

    def on_bus_error(self, _bus, message: Gst.Message) -> None:
        error, debug = message.parse_error()
        self.fail(f"GStreamer error from {message.src.get_name()}: {error.message} ({debug})")

    # -- media

    def on_pad_added(self, _webrtc, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        _, decoder = CODECS[self.codec]
        bin_ = Gst.parse_bin_from_description(
            f"queue ! {decoder} ! videoconvert ! video/x-raw,format=GRAY8 ! "
            "appsink name=sink emit-signals=true sync=false max-buffers=8 drop=false",
            True)
        bin_.get_by_name("sink").connect("new-sample", self.on_sample)
        self.pipeline.add(bin_)
        bin_.sync_state_with_parent()
        if pad.link(bin_.get_static_pad("sink")) != Gst.PadLinkReturn.OK:
            self.fail(f"cannot link webrtcbin's {pad.get_name()} to the decoder")

    def on_sample(self, sink) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        structure = sample.get_caps().get_structure(0)
        width, height = structure.get_value("width"), structure.get_value("height")
        ok, info = sample.get_buffer().map(Gst.MapFlags.READ)
        if not ok:
            return Gst.FlowReturn.ERROR
        try:
            data = info.data
            stride = (width + 3) & ~3  # GRAY8 rows are 4-byte aligned in raw video
            plane = (data[:width * height] if stride == width else
                     b"".join(data[row * stride:row * stride + width] for row in range(height)))
        finally:
            sample.get_buffer().unmap(info)
        with self.lock:
            if self.done:
                return Gst.FlowReturn.EOS
            self.out.write(struct.pack("<HH", width, height) + bytes(plane))
            self.frames += 1
            now = time.monotonic()
            if self.first_frame_at is None:
                self.first_frame_at = now
                log(f"first frame {width}x{height}")
            elif now - self.first_frame_at >= self.seconds:
                self.done = True
                self.finish()
        return Gst.FlowReturn.OK


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the camera's WHEP endpoint, on http://127.0.0.1")
    parser.add_argument("--codec", choices=sorted(CODECS), required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", required=True, help="file for the decoded luma planes")
    args = parser.parse_args()

    # Last resort against any hang (a stuck GStreamer state change, a blocked
    # HTTP call): a thread that ends the process whatever the main thread does.
    watchdog = threading.Timer(SETUP_SECONDS + args.seconds + 2 * HTTP_TIMEOUT + 5,
                               lambda: (log("FAILED: watchdog: still running, giving up"),
                                        os._exit(3)))
    watchdog.daemon = True
    watchdog.start()
    Gst.init(None)
    try:
        check_loopback(args.url)
        report = Client(args.url, args.codec, args.seconds, args.out).run()
    except Failed as exc:
        log(f"FAILED: {exc}")
        return 1
    print(json.dumps(report), flush=True)
    if report["error"]:
        log(f"FAILED: {report['error']}")
        return 1
    log(f"done: {report['frames']} frames")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown of GStreamer objects
