"""A camera published over WHIP (RFC 9725) to an SFU or any WHIP endpoint.

The publish is one PeerSession that offers instead of answering: aiortc
does ICE, DTLS and SRTP, and the camera's batches go out through a Viewer
like any viewer's (the same NACK/RTX, FEC, keyframe requests and
slow-viewer policy), so a publish that cannot keep up never holds the
others. Around it, the WHIP exchange (§4.2): an optional OPTIONS for the
endpoint's ICE servers (§4.6), a POST of the offer with the bearer token
(§4.5) answered 201 with the answer and the session's URL, and a DELETE of
that URL when the publish ends. A publish that fails or drops is made again
after a backoff, until the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse

import aiohttp

from rpistream.webrtc.ice_servers import SessionIceServer, parse_link_header, session_ice_servers
from rpistream.webrtc.session import OfferError, PeerSession
from rpistream.webrtc.viewer import VIEWER_COUNTERS

logger = logging.getLogger("rpistream.whip")

# Seconds between attempts after a failed or dropped publish, in turn, then
# the last one again: soon after a short drop, and at most twice a minute
# against an endpoint that is down (it need not be flooded).
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# A publish that lasted this long was working: the next failure starts the
# backoff over.
STABLE_S = 60.0
# Each HTTP request: an endpoint that takes longer is not answering.
HTTP_TIMEOUT_S = 10.0
# An answer SDP is a few kilobytes; more is not an answer.
MAX_ANSWER_BYTES = 64 * 1024
# A receiver sends RTCP reports at least every 5 s, randomized by up to 1.5x
# (RFC 3550 §6.2, §6.3.1): three missed in a row means the path is gone,
# found in half the time ICE consent takes (RFC 7675 §5.1: 30 s).
NO_FEEDBACK_S = 15.0


class WhipError(Exception):
    """A publish attempt failed; the message says why, for the log and stats."""


class WhipForward:
    """One [[camera.forward]] of type "whip": see the module docstring."""

    def __init__(self, camera, config, *, ice_servers, ice_timeout: float, queue_frames: int,
                 slow_timeout: float):
        self.camera = camera
        self.config = config
        self.target = config.url
        self.name = f"{camera.name} -> {config.url}"
        # The server's own ICE servers (config IceServer tables): used until
        # the endpoint names its own.
        self._configured_ice = ice_servers
        self._endpoint_ice: list[SessionIceServer] | None = None
        self._session_options = dict(ice_timeout=ice_timeout, queue_frames=queue_frames,
                                     slow_timeout=slow_timeout)
        self._task: asyncio.Task | None = None
        self.session: PeerSession | None = None
        self.resource: str | None = None  # the session's URL (the 201's Location)
        self.state = "stopped"
        self.error: str | None = None  # why the last attempt failed or ended
        self.attempts = 0  # POSTs of an offer, or tries to
        self.publishes = 0  # of them, how many got as far as sending video
        self._departed = dict.fromkeys(VIEWER_COUNTERS, 0)

    async def start(self) -> None:
        self.state = "connecting"
        self._task = asyncio.create_task(self._run(), name=f"whip {self.name}")

    async def stop(self) -> None:
        """End the publish and DELETE it at the endpoint (RFC 9725 §4.2)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.state = "stopped"

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        failures = 0
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                started = time.monotonic()
                with contextlib.suppress(WhipError):  # its message is self.error
                    await self._publish(http)
                if time.monotonic() - started >= STABLE_S:
                    failures = 0
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                logger.warning("forward %s: %s; publishing again in %g s",
                               self.name, self.error, delay)
                await asyncio.sleep(delay)
                self.state = "connecting"

    async def _publish(self, http: aiohttp.ClientSession) -> None:
        """One publish, until it ends: always by WhipError, or by cancellation."""
        self.attempts += 1
        if self._endpoint_ice is None:
            self._endpoint_ice = await self._options(http)
        ended = asyncio.Event()
        session = PeerSession(
            self.camera,
            ice_servers=self._endpoint_ice or session_ice_servers(self._configured_ice),
            on_closed=lambda _: ended.set(), **self._session_options)
        self.session = session
        reason = "server shutting down"
        try:
            offer = await session.offer()
            answer = await self._post(http, offer)
            try:
                await session.accept_answer(answer)
            except OfferError as exc:
                raise WhipError(f"{self.config.url}: {exc}") from None
            watch = asyncio.create_task(self._watch(session))
            try:
                await ended.wait()
            finally:
                watch.cancel()
            reason = session.close_reason
            raise WhipError(f"the publish {'dropped' if session.viewer else 'failed'}: {reason}")
        except WhipError as exc:
            reason = self.error = str(exc)
            self.state = "waiting"
            raise
        finally:
            self.session = None
            if session.viewer is not None:
                for key in VIEWER_COUNTERS:
                    self._departed[key] += getattr(session.viewer, key)
            await session.close(reason)
            await self._delete(http)

    async def _watch(self, session: PeerSession) -> None:
        """Say when the video starts; close a publish whose receiver stopped
        reporting for NO_FEEDBACK_S (a Viewer notes each RTCP packet's arrival)."""
        while session.viewer is None:
            await asyncio.sleep(0.1)
        self.publishes += 1
        logger.info("forward %s: publishing (FEC %s)", self.name, session.fec_scheme or "none")
        attached = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            heard = session.viewer.last_rtcp or attached
            if time.monotonic() - heard > NO_FEEDBACK_S:
                session.close_soon(f"no RTCP from the receiver for {NO_FEEDBACK_S:g} s")
                return

    def _headers(self, **extra) -> dict:
        token = self.config.bearer_token
        return {**({"Authorization": f"Bearer {token}"} if token else {}), **extra}

    async def _options(self, http: aiohttp.ClientSession) -> list[SessionIceServer] | None:
        """The endpoint's ICE servers before the offer, if it says (RFC 9725
        §4.6 lets it send them to an OPTIONS); None if it does not."""
        try:
            async with http.options(self.config.url, headers=self._headers()) as response:
                if response.status >= 300:
                    return None
                return parse_link_header(response.headers.getall("Link", [])) or None
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None  # the POST will say what is wrong

    async def _post(self, http: aiohttp.ClientSession, offer: str) -> str:
        """POST the offer (RFC 9725 §4.2): the answer, with the session URL kept."""
        url = self.config.url
        try:
            async with http.post(url, data=offer, headers=self._headers(
                    **{"Content-Type": "application/sdp"})) as response:
                body = await response.content.read(MAX_ANSWER_BYTES + 1)
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise WhipError(f"POST {url}: {describe(exc)}") from None
        text = body.decode("utf-8", "replace")
        if status in (401, 403):
            raise WhipError(f"{url} refused the token ({status}): check bearer_token_file")
        if status != 201:
            detail = " ".join(text.split())[:200]
            raise WhipError(f"{url} answered {status} to the offer: {detail}")
        location = headers.get("Location")
        if not location:
            raise WhipError(f"{url} answered 201 without a Location header (RFC 9725 §4.2)")
        if len(body) > MAX_ANSWER_BYTES:
            raise WhipError(f"{url} answered with more than {MAX_ANSWER_BYTES} bytes")
        self.resource = urllib.parse.urljoin(url, location)
        links = parse_link_header(headers.getall("Link", []))
        if links and self._endpoint_ice is None:
            self._endpoint_ice = links  # too late for this publish; used by the next
        return text

    async def _delete(self, http: aiohttp.ClientSession) -> None:
        """End the session at the endpoint (RFC 9725 §4.2); it may be gone already."""
        resource, self.resource = self.resource, None
        if resource is None:
            return
        try:
            async with http.delete(resource, headers=self._headers()) as response:
                if response.status >= 300 and response.status != 404:
                    logger.info("forward %s: DELETE %s answered %d", self.name, resource,
                                response.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.info("forward %s: DELETE %s: %s", self.name, resource, describe(exc))

    def stats(self) -> dict:
        session = self.session
        viewer = session.viewer if session is not None else None
        totals = {key: self._departed[key] + (getattr(viewer, key) if viewer else 0)
                  for key in VIEWER_COUNTERS}
        # "forwarding" while the video goes out, as for an RTP forward.
        state = "forwarding" if viewer is not None else self.state
        return {**(viewer.stats() if viewer is not None else {}),
                "camera": self.camera.name, "type": "whip", "target": self.target,
                "state": state, "error": self.error, "resource": self.resource,
                "attempts": self.attempts, "restarts": max(0, self.publishes - 1),
                "totals": totals}


def describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {HTTP_TIMEOUT_S:g} s"
    return str(exc) or type(exc).__name__
