"""One WHEP session: an aiortc peer connection whose video rpistream sends itself."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpSender,
    RTCSessionDescription,
)

from rpistream.webrtc import aiortc_internals
from rpistream.webrtc.ice_servers import SessionIceServer, rtc_ice_servers
from rpistream.webrtc.viewer import Viewer, ViewerParameters

logger = logging.getLogger("rpistream.session")

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


class OfferError(ValueError):
    """The offer cannot be answered; the message says why, for the client."""


# Enough to recognise the line that failed; an error message must not echo a
# client's 64 KiB attribute back at it, nor break the one-line error format.
DETAIL_CHARS = 120


# What aiortc raises on an offer it cannot take: the client's doing. TypeError:
# a malformed fmtp (a parameter without a value) reaches int(None) in its codec
# matching.
CLIENT_ERRORS = (ValueError, TypeError, *aiortc_internals.OFFER_ERRORS)


def describe_failure(exc: Exception) -> str:
    """What a parser that raises whatever it trips on said, on one short line."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    detail = " ".join(detail.split())
    return detail if len(detail) <= DETAIL_CHARS else detail[:DETAIL_CHARS - 3] + "..."


def parse_offer(sdp: str, camera_name: str):
    """The offer's video section, or OfferError saying what a client must change."""
    try:
        description = aiortc_internals.parse_sdp(sdp)
    except Exception as exc:  # aiortc's parser raises whatever it trips on
        raise OfferError(f"the body is not a valid SDP offer (the parser failed with "
                         f"{describe_failure(exc)})") from None
    mids = [m.rtp.muxId for m in description.media]
    if None in mids:  # "a=mid" without ":<id>"; aiortc then answers with a different mid
        raise OfferError("the offer has an a=mid line without a value; write a=mid:<id>")
    if len(set(mids)) != len(mids):
        # aiortc pairs sections with transceivers by mid, and fails on
        # duplicates with an AttributeError deep inside setLocalDescription.
        raise OfferError("the offer's m= sections must each have their own a=mid "
                         "(RFC 5888 §4: mid values are unique)")
    video = [m for m in description.media if m.kind == "video"]
    if not video:
        raise OfferError("the offer has no video section (m=video): nothing to receive")
    media = video[0]
    if media.direction not in ("recvonly", "sendrecv"):
        raise OfferError(f"the offer's video is {media.direction}: a WHEP client must "
                         f"offer to receive (recvonly)")
    if not (media.dtls and media.dtls.fingerprints and media.ice.usernameFragment
            and media.ice.password):
        raise OfferError("the offer lacks ICE credentials or a DTLS fingerprint")
    return media


def answer_codecs(media, codec: RTCRtpCodecParameters, camera_name: str,
                  fec_schemes: tuple[str, ...], *,
                  answering: bool = True) -> tuple[list, str | None]:
    """The camera's codec under the payload type the offer gave it, with the
    offer's RTX for it if any, then what the chosen FEC scheme needs (after the
    media codecs: aiortc sends with the first codec listed). RFC 3264 §6.1:
    the answerer keeps the offerer's payload type numbers. Read from an
    answer (`answering` False), what the answer accepted of our offer."""
    for offered in media.rtp.codecs:
        if compatible(codec, offered):
            break
    else:
        if not answering:
            raise OfferError(f"the answer does not take {describe_codec(codec)}, the only "
                             f"codec camera {camera_name!r} sends")
        raise OfferError(f"camera {camera_name!r} sends {describe_codec(codec)}, which the "
                         f"offer does not include; offer that codec to watch this camera")
    feedback = [f for f in aiortc_internals.FEEDBACK if f in offered.rtcpFeedback]
    chosen = [RTCRtpCodecParameters(mimeType=codec.mimeType, clockRate=codec.clockRate,
                                    payloadType=offered.payloadType, rtcpFeedback=feedback,
                                    parameters=dict(codec.parameters))]
    rtx = offered_rtx(media, offered.payloadType)
    if rtx is not None:
        chosen.append(rtx)
    scheme = choose_fec(media, fec_schemes)
    if scheme == "ulpfec":
        red = offered_codec(media, "video/red")
        chosen.append(copy_codec(red))
        rtx_red = offered_rtx(media, red.payloadType)
        if rtx_red is not None and rtx is not None:
            chosen.append(rtx_red)  # retransmissions of RED packets (RFC 4588 over 2198)
        chosen.append(copy_codec(offered_codec(media, "video/ulpfec")))
    elif scheme == "flexfec-03":
        chosen.append(copy_codec(offered_codec(media, "video/flexfec-03")))
    return chosen, scheme


def compatible(codec: RTCRtpCodecParameters, offered) -> bool:
    try:
        return aiortc_internals.codecs_compatible(codec, offered)
    except (TypeError, ValueError):  # a malformed fmtp, e.g. "packetization-mode" alone
        return False


def offered_codec(media, mime_type: str):
    return next((c for c in media.rtp.codecs if c.mimeType.lower() == mime_type.lower()), None)


def offered_rtx(media, apt: int):
    for rtx in media.rtp.codecs:
        if rtx.mimeType.lower() == "video/rtx" and rtx.parameters.get("apt") == apt:
            return RTCRtpCodecParameters(mimeType="video/rtx", clockRate=rtx.clockRate,
                                         payloadType=rtx.payloadType, parameters={"apt": apt})
    return None


def copy_codec(offered) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType=offered.mimeType, clockRate=offered.clockRate,
                                 payloadType=offered.payloadType,
                                 parameters=dict(offered.parameters))


def choose_fec(media, schemes: tuple[str, ...]) -> str | None:
    """The first of the camera's FEC schemes (stream/camera.py `fec_schemes`)
    the offer includes; ULPFEC needs RED too (RFC 5109 §14.2). Firefox offers
    no FlexFEC."""
    for scheme in schemes:
        if scheme == "ulpfec" and offered_codec(media, "video/red") \
                and offered_codec(media, "video/ulpfec"):
            return scheme
        if scheme == "flexfec-03" and offered_codec(media, "video/flexfec-03"):
            return scheme
    return None


def offer_fec(sdp: str, schemes: tuple[str, ...]) -> str:
    """An offer made by aiortc, which knows no FEC, with the codecs `schemes`
    need added to its video section: RED (RFC 2198) and ULPFEC (RFC 5109,
    with RTX for RED when RTX is offered), FlexFEC-03 (with the repair window
    libwebrtc offers, in microseconds)."""
    description = aiortc_internals.parse_sdp(sdp)
    media = next(m for m in description.media if m.kind == "video")
    free = iter(pt for pt in range(96, 128) if pt not in media.fmt)
    rtx = offered_codec(media, "video/rtx") is not None

    def add(mime_type: str, **parameters) -> int:
        pt = next(free)
        media.fmt.append(pt)
        media.rtp.codecs.append(RTCRtpCodecParameters(
            mimeType=mime_type, clockRate=90000, payloadType=pt, parameters=parameters))
        return pt

    for scheme in schemes:
        if scheme == "ulpfec":
            red = add("video/red")
            if rtx:
                add("video/rtx", apt=red)
            add("video/ulpfec")
        elif scheme == "flexfec-03":
            add("video/flexfec-03", **{"repair-window": "10000000"})
    return str(description)


def announce_flexfec_ssrc(sdp: str, media_ssrc: int, fec_ssrc: int) -> str:
    """Chrome uses FlexFEC only when the answer names the FEC stream:
    `a=ssrc-group:FEC-FR <media> <fec>` and its own `a=ssrc` lines (docs/DESIGN.md §6)."""
    lines = sdp.split("\r\n")
    media_lines = [i for i, line in enumerate(lines) if line.startswith(f"a=ssrc:{media_ssrc} ")]
    if not media_lines:
        return sdp
    fec_lines = [f"a=ssrc-group:FEC-FR {media_ssrc} {fec_ssrc}"] + [
        lines[i].replace(f"a=ssrc:{media_ssrc} ", f"a=ssrc:{fec_ssrc} ", 1) for i in media_lines]
    end = max(i for i, line in enumerate(lines)
              if line.startswith(("a=ssrc:", "a=ssrc-group:"))) + 1
    return "\r\n".join(lines[:end] + fec_lines + lines[end:])


def describe_codec(codec: RTCRtpCodecParameters) -> str:
    fmtp = ";".join(f"{k}={v}" for k, v in codec.parameters.items())
    return f"{codec.mimeType}" + (f" ({fmtp})" if fmtp else "")


class PeerSession:
    """Owns one RTCPeerConnection and, once DTLS is up, the Viewer that feeds it.

    Every path out — hang-up (DELETE), ICE or DTLS failure, ICE never
    finishing, a slow-viewer disconnect, server shutdown — goes through
    `close()`, which releases both and tells the owner via `on_closed`.
    """

    def __init__(self, camera, *, ice_servers: list[SessionIceServer], ice_timeout: float,
                 queue_frames: int, slow_timeout: float,
                 on_closed: Callable[[PeerSession], None]):
        self.id = secrets.token_urlsafe(16)
        self.camera = camera
        self.viewer: Viewer | None = None
        self.fec_scheme: str | None = None
        self._flexfec_ssrc = secrets.randbits(32)
        self.close_reason: str | None = None
        self._queue_frames = queue_frames
        self._slow_timeout = slow_timeout
        self._ice_timeout = ice_timeout
        self._on_closed = on_closed
        self._closing: asyncio.Task | None = None
        self._ice_timer: asyncio.TimerHandle | None = None
        self._dtls = None
        self._transceiver = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=rtc_ice_servers(ice_servers)))
        self.pc.on("connectionstatechange", self._on_state)

    def _camera_codec(self) -> RTCRtpCodecParameters:
        codec = RTCRtpCodecParameters(mimeType=self.camera.mime_type, clockRate=90000,
                                      parameters=dict(self.camera.fmtp))
        aiortc_internals.register_video_codec(codec.mimeType, codec.parameters)
        return codec

    def _add_video(self):
        transceiver = self.pc.addTransceiver("video", direction="sendonly")
        self._ssrc, self._rtx_ssrc = aiortc_internals.take_over_sender(
            transceiver, self._on_dtls_connected, self._on_sender_stop)
        self._dtls = transceiver.sender.transport
        self._transceiver = transceiver
        return transceiver

    def _start_ice_timer(self) -> None:
        self._ice_timer = asyncio.get_running_loop().call_later(
            self._ice_timeout, self._ice_timed_out)

    async def answer(self, offer_sdp: str) -> str:
        """Negotiate: the answer SDP, with every local ICE candidate in it."""
        media = parse_offer(offer_sdp, self.camera.name)
        camera_codec = self._camera_codec()
        codecs, self.fec_scheme = answer_codecs(media, camera_codec, self.camera.name,
                                                self.camera.fec_schemes)
        transceiver = self._add_video()
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except CLIENT_ERRORS as exc:
            # aiortc checks every m= section, not only the video one parse_offer
            # looked at: ICE credentials, a=rtcp-mux (WebRTC multiplexes RTP and
            # RTCP, RFC 8834 §4.5), a codec it knows. Its errors are the
            # client's, so a 400.
            raise OfferError(f"the offer cannot be negotiated "
                             f"({describe_failure(exc)})") from None
        aiortc_internals.set_negotiated_codecs(transceiver, codecs)
        for other in self.pc.getTransceivers():
            if other is not transceiver:
                other.direction = "inactive"  # audio or extra video: we send nothing there
        try:
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except CLIENT_ERRORS as exc:
            # An offer aiortc accepted but cannot answer (its answer would not
            # match the offer's sections): still the offer's fault.
            logger.info("offer accepted but not answerable: %s", describe_failure(exc))
            raise OfferError(f"the offer cannot be answered ({describe_failure(exc)})") from None
        self._start_ice_timer()
        answer = self.pc.localDescription.sdp
        if self.fec_scheme == "flexfec-03":
            answer = announce_flexfec_ssrc(answer, self._ssrc, self._flexfec_ssrc)
        return answer

    async def offer(self) -> str:
        """Publish instead (WHIP, RFC 9725 §4.2): the offer SDP, every local ICE
        candidate in it, with the camera's codec and RTX, and the FEC schemes
        the camera can send, which the answer then picks from."""
        transceiver = self._add_video()
        codec = self._camera_codec()
        capabilities = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences(
            [c for c in capabilities if c.mimeType.lower() == "video/rtx"
             or (c.mimeType == codec.mimeType and c.parameters == codec.parameters)])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = offer_fec(self.pc.localDescription.sdp, self.camera.fec_schemes)
        if "flexfec-03" in self.camera.fec_schemes:
            offer = announce_flexfec_ssrc(offer, self._ssrc, self._flexfec_ssrc)
        return offer

    async def accept_answer(self, answer_sdp: str) -> None:
        """The publish's answer: the codecs it kept, and ICE and DTLS start.
        OfferError (the answer's fault) says what is wrong with it."""
        try:
            description = aiortc_internals.parse_sdp(answer_sdp)
        except Exception as exc:  # aiortc's parser raises whatever it trips on
            raise OfferError(f"the answer is not valid SDP ({describe_failure(exc)})") from None
        media = next((m for m in description.media if m.kind == "video"), None)
        if media is None or media.direction not in ("recvonly", "sendrecv"):
            raise OfferError("the answer does not receive the video (no recvonly m=video)")
        codecs, self.fec_scheme = answer_codecs(media, self._camera_codec(), self.camera.name,
                                                self.camera.fec_schemes, answering=False)
        # aiortc matches the answer's codecs to its own list, then to the
        # preferences by exact parameters, which an answerer need not repeat
        # (RFC 6184 §8.2.2): without preferences it only has to find the codec.
        self._transceiver.setCodecPreferences([])
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp,
                                                                     type="answer"))
        except CLIENT_ERRORS as exc:
            raise OfferError(f"the answer cannot be used ({describe_failure(exc)})") from None
        # aiortc kept the codecs it knows; the video goes out with all the answer took.
        aiortc_internals.set_negotiated_codecs(self._transceiver, codecs)
        self._start_ice_timer()

    async def add_candidates(self, sdpfrag: str) -> int:
        """Trickled remote candidates (RFC 8840 SDP fragment): how many were added."""
        added = 0
        mid = None
        for line in sdpfrag.splitlines():
            line = line.strip()
            if line.startswith("a=mid:"):
                mid = line[6:]
            elif line.startswith("a=candidate:"):
                candidate = aiortc_internals.candidate_from_sdp(line[2:].split(":", 1)[1])
                candidate.sdpMid = mid
                candidate.sdpMLineIndex = 0 if mid is None else None
                await self.pc.addIceCandidate(candidate)
                added += 1
        return added

    # --- aiortc callbacks ---------------------------------------------------------

    async def _on_dtls_connected(self, parameters) -> None:
        """aiortc's sender.send(): DTLS is up and the parameters are final."""
        if self.close_reason is not None:
            return
        codecs = parameters.codecs
        codec = codecs[0]
        pts = {c.mimeType.lower(): c.payloadType for c in codecs[1:]}
        rtx_for = {c.parameters.get("apt"): c.payloadType for c in codecs[1:]
                   if c.mimeType.lower() == "video/rtx"}
        rtx = rtx_for.get(codec.payloadType)
        ids = {ext.uri: ext.id for ext in parameters.headerExtensions}
        params = ViewerParameters(
            payload_type=codec.payloadType, ssrc=self._ssrc,
            rtx_payload_type=rtx, rtx_ssrc=self._rtx_ssrc,
            mid=parameters.muxId, mid_extension_id=ids.get(MID_URI),
            abs_send_time_extension_id=ids.get(ABS_SEND_TIME_URI),
            cname=parameters.rtcp.cname or "rpistream",
            fec_scheme=self.fec_scheme, red_payload_type=pts.get("video/red"),
            rtx_red_payload_type=rtx_for.get(pts.get("video/red")),
            ulpfec_payload_type=pts.get("video/ulpfec"),
            flexfec_payload_type=pts.get("video/flexfec-03"), flexfec_ssrc=self._flexfec_ssrc)
        broadcaster = self.camera.broadcaster
        self.viewer = Viewer(
            self.id, params, send=aiortc_internals.datagram_sender(self._dtls),
            header_size=self.camera.rtp_header_size, ext_room=self.camera.ext_room,
            request_keyframe=broadcaster.request_keyframe,
            disconnect=lambda reason: self.close_soon(reason),
            queue_frames=self._queue_frames, slow_timeout=self._slow_timeout,
            answer_nacks=self.camera.config.retransmit)
        aiortc_internals.route_rtcp(self._dtls, self._ssrc, self.viewer)
        broadcaster.add_viewer(self.viewer)
        if self._ice_timer is not None:
            self._ice_timer.cancel()
        logger.info("session %s: watching camera %s (payload type %d%s, FEC %s)", self.id,
                    self.camera.name, codec.payloadType, ", RTX" if rtx is not None else "",
                    self.fec_scheme or "none")

    async def _on_sender_stop(self) -> None:
        """aiortc's sender.stop(), called from pc.close(): nothing of aiortc's runs."""

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed"):
            self.close_soon(f"connection {state}")

    def _ice_timed_out(self) -> None:
        if self.viewer is None:
            self.close_soon(f"ICE and DTLS did not complete within {self._ice_timeout:g} s")

    # --- teardown ---------------------------------------------------------------------

    def close_soon(self, reason: str) -> None:
        """Start closing, from a callback that cannot await. Idempotent."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason))

    async def close(self, reason: str) -> None:
        self.close_soon(reason)
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        self.close_reason = reason
        if self._ice_timer is not None:
            self._ice_timer.cancel()
        if self.viewer is not None:
            self.camera.broadcaster.remove_viewer(self.id)
            aiortc_internals.unroute_rtcp(self._dtls, self.viewer)
            self.viewer.close(reason)
        try:
            await self.pc.close()
        finally:
            logger.info("session %s closed: %s", self.id, reason)
            self._on_closed(self)
