"""`rpistream serve`: start every camera, serve HTTP, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import urllib.parse

from aiohttp import web

from rpistream.webrtc.cycles import freeze_startup
from rpistream.monitor.memory import MemoryWatch
from rpistream.monitor.systemd import SystemdNotifier
from rpistream.sources import choose_default_camera
from rpistream.stream.camera import Camera
from rpistream.web.app import create_app
from rpistream.web.malformed import log_malformed_requests_in_one_line
from rpistream.web.ratelimit import OfferRateLimit
from rpistream.webrtc import aiortc_internals
from rpistream.webrtc.forward import RtpForward
from rpistream.webrtc.sessions import SessionRegistry
from rpistream.webrtc.whip import WhipForward

logger = logging.getLogger("rpistream")

# The exit status when a camera stayed down past monitor.exit_after_camera_down:
# not 1 (a config or start-up error), so the log and systemd tell them apart.
EXIT_CAMERA_DOWN = 3


class Server:
    """Owns the cameras, the sessions and the HTTP site, and their teardown order:
    viewers first (they hold the cameras' batches), then cameras, then HTTP."""

    def __init__(self, config):
        # What a config without cameras gets depends on this machine: decided here.
        self.config = config = choose_default_camera(config)
        self.cameras: dict[str, Camera] = {}
        # [[camera.forward]]s, started once their cameras are.
        self.forwards: list[RtpForward | WhipForward] = []
        ice_servers = config.server.ice_servers
        self.sessions = SessionRegistry(ice_servers=ice_servers, limits=config.limits)
        self.memory = MemoryWatch(config.monitor, cameras=self.cameras, sessions=self.sessions)
        self.notifier = SystemdNotifier(self.status)
        self.app = create_app(self.cameras, self.sessions, ice_servers=ice_servers,
                              max_body_bytes=config.limits.max_body_bytes,
                              token=config.server.token,
                              offer_rate=OfferRateLimit(config.limits.offer_burst,
                                                        config.limits.offers_per_minute),
                              memory=self.memory, debug_api=config.monitor.debug_api,
                              forwards=self.forwards)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        # Set when the server must end on its own (a camera down too long):
        # the reason, and what serve() waits on.
        self.exit_reason: str | None = None
        self.done = asyncio.Event()

    async def start(self) -> None:
        aiortc_internals.self_check()
        aiortc_internals.accept_rsa_dtls_peers()
        aiortc_internals.restrict_host_addresses(list(self.config.server.ice_hosts))
        try:
            for camera_config in self.config.cameras:
                if camera_config.fallback_reason:
                    logger.warning("camera %s: a test pattern, because %s", camera_config.name,
                                   camera_config.fallback_reason)
                camera = Camera(camera_config,
                                keyframe_min_interval=self.config.limits.keyframe_min_interval,
                                give_up_after=self.config.monitor.exit_after_camera_down,
                                give_up=self._give_up)
                self.cameras[camera.name] = camera
            # Side by side: each waits for its first frame (or fails and retries).
            await asyncio.gather(*(camera.start() for camera in self.cameras.values()))
            limits = self.config.limits
            for camera in self.cameras.values():
                for forward_config in camera.config.forward:
                    if forward_config.type == "whip":
                        forward = WhipForward(
                            camera, forward_config, ice_timeout=limits.ice_timeout,
                            ice_servers=self.config.server.ice_servers,
                            queue_frames=limits.viewer_queue_frames,
                            slow_timeout=limits.slow_viewer_timeout)
                    else:
                        forward = RtpForward(camera, forward_config,
                                             queue_frames=limits.viewer_queue_frames,
                                             slow_timeout=limits.slow_viewer_timeout)
                    self.forwards.append(forward)
                    await forward.start()
            log_malformed_requests_in_one_line()
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.config.server.host, self.config.server.port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self.port = self._runner.addresses[0][1]
        self.memory.start()
        self.notifier.start()  # READY=1: serving

    async def stop(self) -> None:
        self.notifier.stopping()
        self.memory.stop()
        await self.sessions.close_all("server shutting down")
        await asyncio.gather(*(forward.stop() for forward in self.forwards))
        await asyncio.gather(*(camera.stop() for camera in self.cameras.values()))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _give_up(self, reason: str) -> None:
        logger.error("%s: exiting (status %d) so that a new process starts it "
                     "(monitor.exit_after_camera_down)", reason, EXIT_CAMERA_DOWN)
        self.exit_reason = reason
        self.done.set()

    def status(self) -> str:
        """One line for `systemctl status`."""
        rss = self.memory.rss_mb()
        memory = f", RSS {rss:.0f} MB ({self.memory.state})" if rss is not None else ""
        return f"{self.sessions.count()} viewers of {len(self.cameras)} cameras{memory}"

    def urls(self) -> list[str]:
        host = self.config.server.host
        shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
        token = self.config.server.token
        # The page URL carries the token: opened once, it leaves a cookie and
        # redirects to the plain URL (rpistream/web/auth.py).
        query = "?token=" + urllib.parse.quote(token, safe="") if token else ""
        return [f"http://{shown}:{self.port}/{query}"] + [
            f"  camera {name}: http://{shown}:{self.port}/cameras/{name}/whep (WHEP)"
            for name in self.cameras]


async def serve(config) -> int:
    """Serve until SIGTERM or SIGINT (0) or a camera down too long (EXIT_CAMERA_DOWN)."""
    server = Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.done.set)
    await server.start()
    freeze_startup()
    print("rpistream is serving; open the viewer at " + "\n".join(server.urls()), flush=True)
    if config.server.token is None:
        print(f"WARNING: no access token is set (server.token in the config): anyone who "
              f"can reach port {server.port} can watch every camera", flush=True)
    try:
        await server.done.wait()
    finally:
        logger.info("shutting down")
        await server.stop()
    return 0 if server.exit_reason is None else EXIT_CAMERA_DOWN


def run(config) -> int:
    """Serve until SIGTERM or SIGINT; the exit status."""
    try:
        return asyncio.run(serve(config))
    except (OSError, aiortc_internals.AiortcMismatch) as exc:
        logger.error("%s", exc)
        return 1
