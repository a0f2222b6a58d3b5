"""HTTP: WHEP per camera, the viewer page, a JSON API and health."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from rpistream.web.auth import AUTHORIZED, token_middleware
from rpistream.web.cameras import CAMERAS, camera_or_404, error
from rpistream.web.monitoring import add_monitoring
from rpistream.web.ratelimit import OfferRateLimit, retry_after
from rpistream.web.recordings import add_recordings
from rpistream.web.snapshot import add_snapshot
from rpistream.webrtc.ice_servers import link_header, session_ice_servers
from rpistream.webrtc.session import OfferError, describe_failure
from rpistream.webrtc.sessions import SessionRegistry, ViewerLimitReached

logger = logging.getLogger("rpistream.web")

STATIC = Path(__file__).parent / "static"
SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"  # RFC 8840 §9.1
# How long a client told "too many viewers" should wait before trying again.
RETRY_AFTER_SECONDS = 10
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag",
}
SESSIONS = web.AppKey("sessions", SessionRegistry)
ICE_SERVERS = web.AppKey("ice_servers", tuple)  # config IceServer tables
OFFER_RATE = web.AppKey("offer_rate", OfferRateLimit)
MEMORY = web.AppKey("memory", object)  # rpistream.monitor.memory.MemoryWatch


@web.middleware
async def errors_and_cors(request: web.Request, handler):
    """Every answer carries CORS headers (WHEP players on other origins); an
    unexpected failure is logged here and answered 500 without a traceback."""
    cors = request.path.startswith(("/cameras/", "/api/"))
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if cors:
            exc.headers.update(CORS_HEADERS)
        raise
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        response = web.Response(status=500, text="internal error; the server log has details\n")
    if cors:
        response.headers.update(CORS_HEADERS)
    return response


def session_or_404(request: web.Request):
    camera = camera_or_404(request)
    session = request.app[SESSIONS].get(camera.name, request.match_info["session"])
    if session is None:
        raise error(web.HTTPNotFound, "no such WHEP session: it ended or never existed")
    return session


def media_type(request: web.Request) -> str:
    try:
        return request.content_type
    except Exception:
        # aiohttp parses the header with CPython's email parser, which raises
        # IndexError on some parameters ("application/sdp;x*"): the media
        # type before the parameters is all a handler here needs.
        return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


async def body_text(request: web.Request, content_type: str) -> str:
    got = media_type(request)
    if got != content_type:
        raise error(web.HTTPUnsupportedMediaType,
                    f"Content-Type must be {content_type}, not {got or 'none'}")
    try:
        return (await request.read()).decode("utf-8")  # aiohttp answers 413 past client_max_size
    except UnicodeDecodeError:
        raise error(web.HTTPBadRequest, "the body is not UTF-8 text") from None


async def whep_post(request: web.Request) -> web.Response:
    """WHEP: offer in, answer out, with the session's URL in Location."""
    limit = request.app.get(OFFER_RATE)
    wait = limit.take(request.remote) if limit is not None else 0
    if wait:
        raise error(web.HTTPTooManyRequests,
                    f"too many new sessions from {request.remote}: {limit.describe()}; "
                    f"try again in {retry_after(wait)} s",
                    headers={"Retry-After": retry_after(wait)})
    camera = camera_or_404(request)
    if camera.fmtp is None:
        # Never live yet: the answer would need the stream's profile. A camera
        # that was live once takes viewers while it restarts; they see it come back.
        raise error(web.HTTPServiceUnavailable,
                    f"camera {camera.name} has not started yet ({camera.health.state}: "
                    f"{camera.health.reason}); try again later",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    memory = request.app.get(MEMORY)
    if memory is not None and memory.state == "critical":
        # It is shedding viewers: one more would be shed again at the next sample.
        raise error(web.HTTPServiceUnavailable,
                    "the server is short of memory and shedding viewers; try again later",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    offer = await body_text(request, SDP)
    sessions = request.app[SESSIONS]
    try:
        session = sessions.create(camera)
    except ViewerLimitReached as exc:
        raise error(web.HTTPServiceUnavailable, f"{exc}; try again later",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    try:
        answer = await session.answer(offer)
    except OfferError as exc:
        await session.close("offer refused")
        raise error(web.HTTPBadRequest, str(exc)) from None
    except BaseException:
        await session.close("negotiation failed")
        raise
    location = f"/cameras/{camera.name}/whep/{session.id}"
    return web.Response(status=201, text=answer, content_type=SDP,
                        headers={"Location": location, **ice_server_links(request)})


def ice_server_links(request: web.Request) -> dict:
    """A Link header with the ICE servers (RFC 9725 §4.6), TURN credentials
    minted for this request, for a request that passed the access token."""
    link = link_header(session_ice_servers(request.app[ICE_SERVERS]))
    return {"Link": link} if link else {}


async def whep_delete(request: web.Request) -> web.Response:
    session = session_or_404(request)
    await session.close("hung up")
    return web.Response(status=200)


async def whep_patch(request: web.Request) -> web.Response:
    """Trickle ICE (RFC 8840 fragment): 204. ICE restarts are not supported:
    422, as WHIP (RFC 9725 §4.3.1, which the WHEP draft follows) asks of a
    server that does only one of the two."""
    session = session_or_404(request)
    fragment = await body_text(request, TRICKLE)
    remote = session.pc.remoteDescription.sdp if session.pc.remoteDescription else ""
    for line in fragment.splitlines():
        if line.startswith("a=ice-ufrag:") and line.strip() not in remote:
            raise error(web.HTTPUnprocessableEntity,
                        "ICE restarts are not supported; start a new WHEP session")
    try:
        await session.add_candidates(fragment)
    except Exception as exc:  # aiortc's candidate parser raises whatever it trips on
        raise error(web.HTTPBadRequest,
                    f"bad candidate in the fragment ({describe_failure(exc)})") from None
    return web.Response(status=204)


async def whep_options(request: web.Request) -> web.Response:
    """The ICE servers before the offer (RFC 9725 §4.6), so that a client
    gathers with them and connects once. Not to a CORS preflight: it carries
    no token (rpistream/web/auth.py), and credentials go only with one."""
    camera_or_404(request)
    preflight = "Access-Control-Request-Method" in request.headers
    return web.Response(status=204, headers={} if preflight else ice_server_links(request))


async def whep_session_options(request: web.Request) -> web.Response:
    session_or_404(request)
    return web.Response(status=204)


async def api_cameras(request: web.Request) -> web.Response:
    return web.json_response([camera.info() for camera in request.app[CAMERAS].values()])


async def healthz(request: web.Request) -> web.Response:
    """200 while every camera is live; 503 naming the cameras that are not,
    with their state and why. Test patterns standing in for a Pi camera are
    named with the reason."""
    failing = {name: f"{camera.health.state}: {camera.health.reason}"
               for name, camera in request.app[CAMERAS].items() if not camera.health.live}
    status = 503 if failing else 200
    if request.get(AUTHORIZED) is False:  # a token is set and this probe lacks it
        return web.json_response({"status": "failing" if failing else "ok"}, status=status)
    fallbacks = {name: camera.config.fallback_reason
                 for name, camera in request.app[CAMERAS].items() if camera.config.fallback_reason}
    return web.json_response({"status": "failing" if failing else "ok",
                              "viewers": request.app[SESSIONS].count(),
                              "failing": failing, "test_pattern_because": fallbacks},
                             status=status)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def create_app(cameras: dict, sessions: SessionRegistry, *, ice_servers: tuple,
               max_body_bytes: int, token: str | None = None,
               offer_rate: OfferRateLimit | None = None, memory=None,
               debug_api: bool = False, forwards: list | None = None) -> web.Application:
    # errors_and_cors outermost: a 401 carries CORS headers too.
    middlewares = [errors_and_cors] + ([token_middleware(token)] if token else [])
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    if offer_rate is not None:
        app[OFFER_RATE] = offer_rate
    app[CAMERAS] = cameras
    app[SESSIONS] = sessions
    app[ICE_SERVERS] = ice_servers
    whep, resource = "/cameras/{camera}/whep", "/cameras/{camera}/whep/{session}"
    app.add_routes([
        web.get("/", index),
        web.static("/static", STATIC),
        web.get("/api/cameras", api_cameras),
        web.get("/healthz", healthz),
        web.post(whep, whep_post),
        web.options(whep, whep_options),
        web.delete(resource, whep_delete),
        web.patch(resource, whep_patch),
        web.options(resource, whep_session_options),
    ])
    add_recordings(app)
    add_snapshot(app)
    if memory is not None:  # /metrics, /api/stats, /api/debug/tracemalloc
        app[MEMORY] = memory
        add_monitoring(app, cameras, sessions, memory, debug_api=debug_api,
                       forwards=forwards if forwards is not None else [])
    return app
