"""`rpistream serve`: start every camera, serve HTTP, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal

from aiohttp import web

from rpistream.stream.camera import Camera, CameraError
from rpistream.web.app import create_app
from rpistream.webrtc import aiortc_internals
from rpistream.webrtc.sessions import SessionRegistry

logger = logging.getLogger("rpistream")


class Server:
    """Owns the cameras, the sessions and the HTTP site, and their teardown order:
    viewers first (they hold the cameras' batches), then cameras, then HTTP."""

    def __init__(self, config):
        self.config = config
        self.cameras: dict[str, Camera] = {}
        ice_servers = [dataclasses.asdict(s) for s in config.server.ice_servers]
        self.sessions = SessionRegistry(ice_servers=ice_servers, limits=config.limits)
        self.app = create_app(self.cameras, self.sessions, ice_servers=ice_servers,
                              max_body_bytes=config.limits.max_body_bytes)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        aiortc_internals.self_check()
        aiortc_internals.accept_rsa_dtls_peers()
        aiortc_internals.restrict_host_addresses(list(self.config.server.ice_hosts))
        try:
            for camera_config in self.config.cameras:
                camera = Camera(camera_config,
                                keyframe_min_interval=self.config.limits.keyframe_min_interval)
                self.cameras[camera.name] = camera
                await camera.start()
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.config.server.host, self.config.server.port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self.sessions.close_all("server shutting down")
        for camera in self.cameras.values():
            camera.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def urls(self) -> list[str]:
        host = self.config.server.host
        shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
        return [f"http://{shown}:{self.port}/"] + [
            f"  camera {name}: http://{shown}:{self.port}/cameras/{name}/whep (WHEP)"
            for name in self.cameras]


async def serve(config) -> None:
    server = Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print("rpistream is serving; open the viewer at " + "\n".join(server.urls()), flush=True)
    try:
        await stop.wait()
    finally:
        logger.info("shutting down")
        await server.stop()


def run(config) -> int:
    """Serve until SIGTERM or SIGINT; the exit status."""
    try:
        asyncio.run(serve(config))
    except (CameraError, OSError, aiortc_internals.AiortcMismatch) as exc:
        logger.error("%s", exc)
        return 1
    return 0
