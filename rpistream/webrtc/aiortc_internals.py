"""Every use of aiortc's (and aioice's) private internals, in one place.

aiortc does ICE, DTLS, SRTP and SDP for rpistream; rpistream writes the video
RTP and RTCP itself. That takes a few attributes aiortc does not promise to
keep, so they are all used here and checked once at startup by `self_check()`,
which names whatever a new aiortc release moved. pyproject.toml pins aiortc
to the range the tests passed on.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Awaitable, Callable

import aioice.ice
import aioice.turn
import aiortc.clock
import aiortc.exceptions
import aiortc.rtcpeerconnection
import aiortc.rtp
import aiortc.sdp
from aiortc import RTCRtpTransceiver
from aiortc import codecs as aiortc_codecs
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtcrtpsender import RTCRtpSender

TESTED_AIORTC = ">=1.16,<1.17"

# What rpistream reaches into, checked by self_check(): (object, attribute, why).
_REQUIRED = [
    (aioice.ice, "get_host_addresses", "restricting ICE host candidates"),
    (aioice.ice.Connection, "_nominated", "sending on the selected candidate pair"),
    (RTCIceTransport, "_connection", "the aioice connection under ICE"),
    (aiortc_codecs, "CODECS", "registering each camera's exact codec"),
    (RTCCertificate, "_create_ssl_context", "accepting RSA DTLS peers (GStreamer)"),
    (RTCDtlsTransport, "_rtp_router", "receiving RTCP for our video SSRC"),
    (RTCDtlsTransport, "_tx_srtp", "SRTP-protecting our own RTP"),
    (RTCDtlsTransport, "transport", "the ICE transport under DTLS"),
    (RTCRtpSender, "_ssrc", "the video SSRC the answer announces"),
    (RTCRtpSender, "_rtx_ssrc", "the RTX SSRC the answer announces"),
    (RTCRtpTransceiver, "_codecs", "the codecs negotiated for the transceiver"),
    (aiortc.clock, "current_ntp_time", "sender reports and abs-send-time"),
    (aiortc.sdp, "SessionDescription", "checking an offer before aiortc takes it"),
    (aiortc.sdp, "candidate_from_sdp", "trickled ICE candidates"),
    (aiortc.rtcpeerconnection, "is_codec_compatible", "matching the camera's codec to offers"),
    (aiortc.exceptions, "InternalError", "telling a bad offer from a server fault"),
    (aiortc.exceptions, "OperationError", "telling a bad offer from a server fault"),
    *[(aiortc.rtp, name, "reading and writing RTCP") for name in (
        "RTCP_PSFB_APP", "RTCP_PSFB_FIR", "RTCP_PSFB_PLI", "RTCP_RTPFB_NACK", "RtcpPsfbPacket",
        "RtcpRrPacket", "RtcpRtpfbPacket", "RtcpSdesPacket", "RtcpSenderInfo", "RtcpSourceInfo",
        "RtcpSrPacket", "unpack_remb_fci")],
]


class AiortcMismatch(RuntimeError):
    """aiortc's internals are not what rpistream was built against."""


def self_check() -> None:
    """Fail loudly, naming each missing attribute, if aiortc changed under us."""
    missing = [f"{getattr(owner, '__name__', owner)}.{name} (used for {why})"
               for owner, name, why in _REQUIRED if not _has(owner, name)]
    if missing:
        version = importlib.metadata.version("aiortc")
        raise AiortcMismatch(
            f"aiortc {version} lacks what rpistream uses: {'; '.join(missing)}. "
            f"rpistream was tested with aiortc {TESTED_AIORTC}: install that "
            f"(pip install 'aiortc{TESTED_AIORTC}')")


def _has(owner, name: str) -> bool:
    if hasattr(owner, name):
        return True
    # Instance attributes set in __init__ do not show on the class: look at the
    # source of __init__ instead of constructing one.
    init = getattr(owner, "__init__", None)
    code = getattr(init, "__code__", None)
    return code is not None and name in code.co_names


# --- SDP, RTCP and time: aiortc's modules outside its public API ---------------

# RTCP packet classes and constants (RFC 3550 §6.4, RFC 4585 §6, REMB): the
# viewer writes sender reports and reads reports, NACK, PLI/FIR and REMB.
rtcp = aiortc.rtp
# What aiortc raises on an offer it cannot take (beyond ValueError and
# TypeError): the client's doing, answered with 400.
OFFER_ERRORS = (aiortc.exceptions.OperationError, aiortc.exceptions.InvalidAccessError,
                aiortc.exceptions.InternalError)


def ntp_time() -> int:
    """Now as a 64-bit NTP timestamp (RFC 3550 §4)."""
    return aiortc.clock.current_ntp_time()


def parse_sdp(text: str):
    """aiortc's parse of a session description (raises whatever it trips on)."""
    return aiortc.sdp.SessionDescription.parse(text)


def candidate_from_sdp(text: str):
    """An RTCIceCandidate from the value of an a=candidate line."""
    return aiortc.sdp.candidate_from_sdp(text)


def codecs_compatible(codec: RTCRtpCodecParameters, offered: RTCRtpCodecParameters) -> bool:
    """aiortc's codec match (H.264: profile and packetization-mode, RFC 6184 §8.1)."""
    return aiortc.rtcpeerconnection.is_codec_compatible(codec, offered)


# --- ICE ----------------------------------------------------------------------

def restrict_host_addresses(addresses: list[str]) -> None:
    """Offer exactly these ICE host addresses (aioice otherwise takes every
    interface's address and always skips 127.0.0.1). Process-wide: aioice looks
    the function up at every gathering. An empty list restores aioice's own."""
    original = _original_get_host_addresses
    if not addresses:
        aioice.ice.get_host_addresses = original
        return

    def configured(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = configured


_original_get_host_addresses = aioice.ice.get_host_addresses


def datagram_sender(dtls: RTCDtlsTransport) -> Callable[[bytes], int]:
    """A synchronous send for RTP/RTCP that is already serialized: SRTP-protect,
    then sendto() on the nominated ICE pair. aiortc's own path awaits a coroutine
    per packet; this one is a function call. Returns the bytes put on the wire,
    or 0 when the socket is backed up (the datagram is dropped, not queued: the
    caller decides what to skip)."""
    connection = dtls.transport._connection
    pair = connection._nominated[1]
    transport = pair.protocol.transport
    # A relayed pair (our own TURN allocation, RFC 8656) sends through
    # aioice's TurnTransport, which has neither get_write_buffer_size() nor
    # is_closing(): the socket to the TURN server under it has both (TCP's
    # buffer fills when the TURN server falls behind).
    under = (transport._TurnTransport__inner_protocol.transport
             if isinstance(transport, aioice.turn.TurnTransport) else transport)
    address = pair.remote_addr
    srtp = dtls._tx_srtp

    def send(packet: bytes) -> int:
        # A closing transport (aioice closed it: ICE consent expired, the
        # session's close is on its way) takes nothing. Python 3.11's sendto()
        # on a closed unconnected datagram transport raises AttributeError,
        # which would end the camera's fan-out of that frame for every viewer.
        if under.get_write_buffer_size() or under.is_closing():
            return 0
        # RFC 5761 §4: a second byte of 192-223 (RTCP packet types) is RTCP.
        protected = (srtp.protect_rtcp(packet) if 192 <= packet[1] <= 223
                     else srtp.protect(packet))
        transport.sendto(protected, address)
        return len(protected)

    return send


# --- DTLS ---------------------------------------------------------------------

# aiortc offers ECDSA suites only; a peer with an RSA certificate (GStreamer's
# webrtcbin) then fails with "no shared cipher". ECDHE key exchange either way.
_CIPHERS = (b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
            b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
            b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:"
            b"ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA")


def accept_rsa_dtls_peers() -> None:
    """Let DTLS negotiate ECDHE-RSA suites as well as aiortc's ECDSA ones."""
    create = _original_create_ssl_context

    def create_ssl_context(self, srtp_profiles):
        context = create(self, srtp_profiles)
        context.set_cipher_list(_CIPHERS)
        return context

    RTCCertificate._create_ssl_context = create_ssl_context


_original_create_ssl_context = RTCCertificate._create_ssl_context


# --- codecs and senders ---------------------------------------------------------

FEEDBACK = [RTCRtcpFeedback(type="nack"), RTCRtcpFeedback(type="nack", parameter="pli"),
            RTCRtcpFeedback(type="ccm", parameter="fir"), RTCRtcpFeedback(type="goog-remb")]


def register_video_codec(mime_type: str, parameters: dict[str, str]) -> None:
    """Make sure aiortc accepts an offer whose only match is this codec.

    aiortc refuses, inside setRemoteDescription(), an offer that has none of the
    codecs in its own list: an offer of H.264 High profile alone would fail
    before rpistream could answer it. The answer's codecs are set afterwards by
    `set_negotiated_codecs`, so where the entry sits in the list does not matter.
    """
    video = aiortc_codecs.CODECS["video"]
    for codec in video:
        if codec.mimeType == mime_type and codec.parameters == parameters:
            return
    used = {codec.payloadType for codec in video}
    free = [pt for pt in range(96, 128) if pt not in used]
    video += [
        RTCRtpCodecParameters(mimeType=mime_type, clockRate=90000, payloadType=free[0],
                              rtcpFeedback=list(FEEDBACK), parameters=dict(parameters)),
        RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=free[1],
                              parameters={"apt": free[0]}),
    ]


def set_negotiated_codecs(transceiver: RTCRtpTransceiver,
                          codecs: list[RTCRtpCodecParameters]) -> None:
    """What the answer lists and `sender.send()` gets: exactly these codecs."""
    transceiver._codecs = codecs


def take_over_sender(transceiver: RTCRtpTransceiver,
                     on_send: Callable[[RTCRtpSendParameters], Awaitable[None]],
                     on_stop: Callable[[], Awaitable[None]]) -> tuple[int, int]:
    """Keep aiortc's video send loop from ever running for this transceiver.

    aiortc calls `sender.send(parameters)` once DTLS is up, which would start a
    per-viewer RTP task polling a track; `on_send` gets the negotiated
    parameters instead, and rpistream sends the video itself. Returns the
    (media, RTX) SSRCs aiortc put in the answer.
    """
    sender = transceiver.sender
    sender.send = on_send
    sender.stop = on_stop
    return sender._ssrc, sender._rtx_ssrc


def route_rtcp(dtls: RTCDtlsTransport, ssrc: int, receiver) -> None:
    """Deliver RTCP about `ssrc` (reports, NACK, PLI/FIR, REMB) to
    `receiver._handle_rtcp_packet(packet)` (an async method)."""
    receiver._ssrc = ssrc
    dtls._rtp_router.register_sender(receiver, ssrc)


def unroute_rtcp(dtls: RTCDtlsTransport, receiver) -> None:
    dtls._rtp_router.unregister_sender(receiver)
